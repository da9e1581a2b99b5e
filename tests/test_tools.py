"""Tools: schemas from type hints and docstrings, validation, `run` observations, and the agent's
grammar-constrained tool loop (errors fed back, bounded by max_steps, results cited)."""

from __future__ import annotations

import datetime
import enum
import json
import time
from typing import Annotated, Literal, Optional

import pytest

from agentkit.agent import Agent
from agentkit.config import AgentSettings
from agentkit.knowledge.memory import MemorySource
from agentkit.llm.base import GenerationOptions
from agentkit.testing import FakeLLM, schema_instance
from agentkit.tools import Tool, ToolError, call_schema, parse_docstring, run, tool
from agentkit.types import Message, Passage, StepEvent


class Unit(enum.Enum):
    CELSIUS = "C"
    FAHRENHEIT = "F"


@tool
def weather(city: str, unit: Unit = Unit.CELSIUS, days: int = 1, detailed: bool = False,
            tags: Optional[list[str]] = None, kind: Literal["rain", "sun"] = "sun") -> str:  # noqa: UP045 - Optional on purpose
    """Forecast the weather for a city.

    Uses a made-up model.

    Args:
        city: The city's name,
            in English.
        unit: Temperature unit.
        days (int): How many days ahead.
        detailed: More words.

    Returns:
        The forecast.
    """
    return f"{city}: 21 {unit.value} for {days} day(s), {kind}, tags={tags}"


@tool
def calculate(expression: str) -> str:
    """Multiply two numbers written as "a*b".

    Args:
        expression: Two integers joined by *.
    """
    a, _, b = expression.partition("*")
    if not b:
        raise ToolError(f"cannot parse {expression!r}; write it as a*b")
    return str(int(a) * int(b))


def test_schema_from_type_hints_and_google_docstring() -> None:
    assert isinstance(weather, Tool) and weather.name == "weather"
    assert weather.description == "Forecast the weather for a city. Uses a made-up model."
    p = weather.parameters
    assert p["required"] == ["city"] and p["additionalProperties"] is False
    props = p["properties"]
    assert props["city"] == {"type": "string", "description": "The city's name, in English."}
    assert props["unit"] == {"enum": ["C", "F"], "description": "Temperature unit.", "default": "C"}
    assert props["days"] == {"type": "integer", "description": "How many days ahead.", "default": 1}
    assert props["detailed"]["type"] == "boolean"
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["kind"] == {"enum": ["rain", "sun"], "default": "sun"}
    assert weather.signature().startswith("weather(city: a string, unit: \"C\" | \"F\" = optional")


def test_numpy_docstrings_annotated_and_decorator_options() -> None:
    @tool(name="add", timeout=2)
    def add_numbers(a: Annotated[float, "The first."], b: float = 0.0) -> float:
        """Add numbers.

        Parameters
        ----------
        b : float
            The second,
            optional.
        """
        return a + b

    assert add_numbers.name == "add" and add_numbers.timeout == 2
    assert add_numbers.parameters["properties"]["a"] == {"type": "number", "description": "The first."}
    assert add_numbers.parameters["properties"]["b"]["description"] == "The second, optional."
    assert add_numbers(1, 2) == 3
    assert parse_docstring("One line.") == ("One line.", {})


def test_a_parameter_without_a_type_hint_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"tool 'f': parameter 'x' has no type hint; annotate it \(e\.g\. `x: str`\)"):
        @tool
        def f(x, y: int) -> int:  # type: ignore[no-untyped-def]
            return y

    with pytest.raises(TypeError, match=r"parameter 'when': type .*datetime.* is not supported"):
        @tool
        def g(when: datetime.date) -> str:
            return ""

    with pytest.raises(TypeError, match=r"\*\*extra"):
        @tool
        def h(**extra: str) -> str:
            return ""


def test_run_validates_arguments_and_turns_failures_into_observations() -> None:
    assert run(weather, {"city": "Oslo", "unit": "F", "days": 2.0}) == "Oslo: 21 F for 2 day(s), sun, tags=None"
    assert run(weather, {"city": "Oslo", "tags": None}).startswith("Oslo")  # null = left out
    assert run(weather, {}) == "error: missing required argument 'city'"
    assert run(weather, {"city": "Oslo", "wind": 3}) == (
        "error: unknown argument 'wind'; weather takes: city, unit, days, detailed, tags, kind")
    assert run(weather, {"city": 7}) == "error: argument 'city' must be a string, got 7"
    assert run(weather, {"city": "Oslo", "days": True}) == "error: argument 'days' must be an integer, got true"
    assert run(weather, {"city": "Oslo", "days": 1.5}) == "error: argument 'days' must be an integer, got 1.5"
    assert run(weather, {"city": "Oslo", "unit": "K"}) == "error: argument 'unit' must be one of 'C', 'F'; got \"K\""
    assert run(weather, {"city": "Oslo", "tags": ["a", 2]}) == "error: argument 'tags[1]' must be a string, got 2"
    assert run(weather, ["Oslo"]) == 'error: arguments must be a JSON object, got ["Oslo"]'  # type: ignore[arg-type]
    assert run(calculate, {"expression": "17"}) == "error: cannot parse '17'; write it as a*b"
    assert run(calculate, {"expression": "a*b"}).startswith("error: ValueError: invalid literal")


def test_run_results_timeouts_and_length() -> None:
    @tool
    def data(n: int) -> dict:
        """Some data."""
        return {"n": n, "items": list(range(n))}

    @tool(timeout=0.05)
    def slow(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "done"

    assert json.loads(run(data, {"n": 2})) == {"n": 2, "items": [0, 1]}
    assert run(data, {"n": 1000}, max_chars=50).endswith("…") and len(run(data, {"n": 1000}, max_chars=50)) == 50
    assert run(slow, {"seconds": 1.0}) == "error: slow did not finish within 0.05 s"
    assert run(slow, {"seconds": 0.0}, timeout=5) == "done"


def test_call_schema_bounds_strings_for_the_grammar() -> None:
    schema = call_schema(weather)
    assert schema["properties"]["tool"] == {"const": "weather"}
    args = schema["properties"]["arguments"]
    assert args["properties"]["city"] == {"type": "string", "maxLength": 200}
    assert args["properties"]["tags"]["maxItems"] == 8
    assert "description" not in args["properties"]["unit"]


# --- the agent's tool loop --------------------------------------------------------------------


def call(expression: str) -> dict:
    return {"action": "call", "tool": "calculate", "arguments": {"expression": expression}}


def test_the_agent_calls_a_tool_and_cites_the_observation() -> None:
    llm = FakeLLM([call("17*23"), {"action": "answer"}, "Reasoning: the tool multiplied.\nAnswer: It is 391 [1]."])
    agent = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=3))
    events = list(agent.stream("What is 17*23?"))
    answer = events[-1].answer
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    assert [(s.action, s.tool, s.observation) for s in steps] == [("call", "calculate", "391"), ("answer", "", "")]
    assert answer.route.targets == ["parametric"]
    [cite] = answer.citations
    assert (cite.passage.source, cite.passage.uri) == ("tool:calculate", "tool://calculate")
    assert cite.passage.text == 'calculate(expression="17*23") = 391'
    assert not answer.from_memory and answer.warnings == []
    # The action was grammar-constrained: one alternative per action, discriminated by "action".
    schema = llm.calls[0][1].json_schema
    assert [alt["properties"]["action"]["const"] for alt in schema["oneOf"]] == ["answer", "call"]
    assert schema["oneOf"][1]["properties"]["tool"] == {"const": "calculate"}


def test_a_tool_error_goes_back_to_the_model_which_retries() -> None:
    llm = FakeLLM([call("17 x 23"), call("17*23"), {"action": "answer"}, "Answer: 391 [1]."])
    answer = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=4)).ask("What is 17*23?")
    first, second = answer.steps[:2]
    assert first.error and first.observation == "error: cannot parse '17 x 23'; write it as a*b"
    assert not second.error
    assert "error: cannot parse '17 x 23'" in llm.calls[1][0][-1].content
    assert [p.source for p in answer.passages] == ["tool:calculate"]  # errors are not evidence


def test_unknown_tools_and_bad_arguments_are_observations_too() -> None:
    llm = FakeLLM([{"action": "call", "tool": "nope", "arguments": {}},
                   {"action": "call", "tool": "calculate", "arguments": {"expr": "1*2"}},
                   {"action": "answer"}, "Answer: I do not know."])
    answer = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=4)).ask("What is 1*2?")
    assert [s.observation for s in answer.steps[:2]] == [
        "error: unknown tool 'nope'; tools: calculate",
        "error: unknown argument 'expr'; calculate takes: expression",
    ]


def test_max_steps_bounds_the_loop_and_answers_with_what_was_found() -> None:
    products = iter(["2*3", "3*4", "4*5", "5*6"])
    llm = FakeLLM(lambda messages, options: call(next(products)) if options.json_schema else "Answer: 6 [1].")
    answer = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=3)).ask("Multiply things")
    assert [s.observation for s in answer.steps] == ["6", "12"]
    assert any("agent.max_steps (3)" in w for w in answer.warnings)
    assert answer.text == "6 [1]."
    assert len([o for _, o in llm.calls if o.json_schema]) == 2


def test_repeating_the_same_call_ends_the_loop() -> None:
    llm = FakeLLM(lambda messages, options: call("2*3") if options.json_schema else "Answer: 6 [1].")
    answer = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=5)).ask("What is 2*3?")
    assert [(s.action, s.observation) for s in answer.steps] == [("call", "6"), ("answer", "")]
    assert answer.warnings == []


def test_tools_get_one_action_even_with_max_steps_1() -> None:
    llm = FakeLLM([call("6*7"), "Answer: 42 [1]."])
    answer = Agent(llm, tools=[calculate]).ask("What is 6*7?")
    assert [s.observation for s in answer.steps] == ["42"] and answer.warnings == []
    assert answer.citations[0].passage.source == "tool:calculate"


def test_the_default_fake_llm_answers_at_once() -> None:
    llm = FakeLLM()
    answer = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=5)).ask("What is 6*7?")
    assert [s.action for s in answer.steps] == ["answer"]


def test_search_and_tools_in_one_loop() -> None:
    docs = MemorySource("docs", "Company handbook: holidays, expenses.")
    docs.add([Passage("holidays#0", "Every employee gets 25 holiday days a year.", "Holidays")])
    llm = FakeLLM([
        {"action": "search", "source": "docs", "query": "holiday days per year"},
        call("25*2"),
        {"action": "answer"},
        "Answer: 50 days [1][2].",
    ])
    answer = Agent(llm, [docs], tools=[calculate], settings=AgentSettings(max_steps=4)).ask(
        "How many holiday days do I get in two years?", route=["docs"])
    assert [s.action for s in answer.steps] == ["search", "call", "answer"]
    assert {p.source for p in answer.passages} == {"docs", "tool:calculate"}
    alternatives = llm.calls[0][1].json_schema["oneOf"]
    assert alternatives[1]["properties"]["source"] == {"enum": ["docs"]}


def test_an_unparseable_action_is_a_warning_not_a_crash() -> None:
    llm = FakeLLM(['{"action": "call", "tool": "calc', "Answer: I do not know."])
    answer = Agent(llm, tools=[calculate], settings=AgentSettings(max_steps=3)).ask("What is 6*7?")
    assert any("not valid JSON" in w for w in answer.warnings) and answer.text == "I do not know."


def test_schema_instance_of_the_action_schema_is_a_valid_answer() -> None:
    agent = Agent(FakeLLM(), tools=[calculate, weather])
    schema = agent._action_schema([])
    assert schema_instance(schema) == {"action": "answer"}
    assert [alt["properties"].get("tool") for alt in schema["oneOf"]][1:] == [{"const": "calculate"}, {"const": "weather"}]


# --- the real model: the grammar keeps every action parseable -----------------------------------


@pytest.mark.real_model
def test_the_bundled_model_always_emits_a_parseable_tool_call() -> None:
    from agentkit.llm.llama_cpp import LlamaCppLLM
    from agentkit.reasoning.cot import load_template

    llm = LlamaCppLLM(n_ctx=1024)
    agent = Agent(llm, tools=[calculate])
    schema = agent._action_schema([])
    tools = list(agent.tools.values())
    try:
        for question in ("What is 17*23?", "Multiply 6 by 7."):
            messages = load_template("tools").render(
                question=question, sources=[], passages=[], tools=tools, observations=[])
            # The agent's own budget: the grammar bounds every string, so the JSON always closes.
            reply = llm.chat(messages, GenerationOptions(max_tokens=256, temperature=0.0, json_schema=schema))
            action = json.loads(reply.text)
            assert action["action"] in ("answer", "call")
            if action["action"] == "call":
                assert action["tool"] == "calculate"
                assert isinstance(calculate.validate(action["arguments"])["expression"], str)
    finally:
        llm.close()


def test_messages_render_tools_and_observations() -> None:
    from agentkit.reasoning.cot import load_template

    messages = load_template("tools").render(
        question="What is 2*3?", sources=[], passages=[], tools=[calculate],
        observations=['calculate(expression="2x3") -> error: cannot parse'])
    assert isinstance(messages[-1], Message)
    text = messages[-1].content
    assert "- calculate(expression: a string): Multiply two numbers" in text
    assert '- calculate(expression="2x3") -> error: cannot parse' in text
