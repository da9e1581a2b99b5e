"""agentkit-calc: results, errors as observations, and the agent calling the tools through JSON actions."""

from __future__ import annotations

import agentkit_calc
import pytest
from agentkit_calc import calculate, convert_units

from agentkit import Agent
from agentkit.config import AgentSettings
from agentkit.plugins import load_registry
from agentkit.testing import FakeLLM
from agentkit.tools import ToolError, run


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("17*23", "391"),
        ("17 × 23", "391"),
        ("(1 + 2) * -3", "-9"),
        ("2^10", "1024"),
        ("7 / 2", "3.5"),
        ("7 // 2", "3"),
        ("10 % 4", "2"),
        ("sqrt(2)", "1.41421356237"),
        ("round(pi, 2)", "3.14"),
        ("max(3, 9, 4) - min(1, 2)", "8"),
        ("0.1 + 0.2", "0.3"),
        ("2 ** 0.5 * 2 ** 0.5", "2"),
    ],
)
def test_calculate(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    ("expression", "error"),
    [
        ("1 / 0", "division by zero"),
        ("__import__('os')", "unknown function '__import__'"),
        ("__import__('os').system('echo hi')", "is not arithmetic"),
        ("().__class__", "is not arithmetic"),
        ("x + 1", "unknown name 'x'"),
        ("2 ** 99999", "exponent"),
        ("1 +", "cannot parse"),
        ("'a' * 3", "is not arithmetic"),
        ("", "empty"),
        ("sqrt(-1)", "math domain error"),
    ],
)
def test_calculate_refuses(expression: str, error: str) -> None:
    with pytest.raises(ToolError, match=error.replace("(", r"\(")):
        calculate(expression)
    assert run(calculate, {"expression": expression}).startswith("error: ")


@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "expected"),
    [
        (5, "km", "m", "5 km = 5000 m"),
        (1, "mi", "km", "1 mi = 1.609344 km"),
        (100, "C", "F", "100 C = 212 F"),
        (32, "F", "C", "32 F = 0 C"),
        (0, "K", "C", "0 K = -273.15 C"),
        (2, "lb", "g", "2 lb = 907.18474 g"),
        (90, "min", "h", "90 min = 1.5 h"),
        (1, "gal", "l", "1 gal = 3.785411784 l"),
    ],
)
def test_convert_units(value: float, from_unit: str, to_unit: str, expected: str) -> None:
    assert run(convert_units, {"value": value, "from_unit": from_unit, "to_unit": to_unit}) == expected


def test_convert_units_errors() -> None:
    assert run(convert_units, {"value": 1, "from_unit": "kg", "to_unit": "m"}) == \
        "error: cannot convert mass (kg) to length (m)"
    assert run(convert_units, {"value": 1, "from_unit": "parsec", "to_unit": "m"}).startswith(
        "error: argument 'from_unit' must be one of")
    assert run(convert_units, {"value": -500, "from_unit": "C", "to_unit": "K"}).endswith("below absolute zero")
    assert run(convert_units, {"value": "ten", "from_unit": "m", "to_unit": "km"}) == \
        "error: argument 'value' must be a number, got \"ten\""


def test_schemas_come_from_the_signatures() -> None:
    assert calculate.parameters["required"] == ["expression"]
    props = convert_units.parameters["properties"]
    assert props["value"]["type"] == "number"
    assert "km" in props["from_unit"]["enum"] and "C" in props["to_unit"]["enum"]
    assert props["to_unit"]["description"].startswith("The unit wanted")


def test_registered_through_the_hook() -> None:
    registry = load_registry({"calc": agentkit_calc}, entry_points=False)
    assert registry.tool("calculate") is calculate
    assert registry.plugins["calc"].registered == {"register_tools": ["calculate", "convert_units"]}


def test_the_agent_calls_the_calculator_and_cites_it() -> None:
    llm = FakeLLM([
        {"action": "call", "tool": "calculate", "arguments": {"expression": "17 * / 23"}},
        {"action": "call", "tool": "calculate", "arguments": {"expression": "17 * 23"}},
        {"action": "answer"},
        "Reasoning: the calculator gave the product.\nAnswer: 17 times 23 is 391 [1].",
    ])
    agent = Agent(llm, tools=[calculate, convert_units], settings=AgentSettings(max_steps=4))
    answer = agent.ask("What is 17*23?")
    calls = [s for s in answer.steps if s.action == "call"]
    assert calls[0].error and calls[0].observation.startswith("error: cannot parse")
    assert not calls[1].error and calls[1].observation == "391"
    assert "17 * / 23" in llm.calls[1][0][-1].content  # the error went back to the model
    [citation] = answer.citations
    assert citation.passage.source == "tool:calculate" and citation.passage.uri == "tool://calculate"
    assert "391" in citation.passage.text
