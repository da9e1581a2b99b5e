"""agentkit-calc: tools for agentkit's agent, a safe arithmetic calculator and a unit converter.

`calculate` walks the expression's syntax tree (`ast`) and allows numbers, arithmetic and a few
math functions only: no names, attributes or calls beyond those, never `eval`.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any, Literal

from agentkit.plugins import hookimpl
from agentkit.tools import ToolError, tool

__version__ = "0.1.0"

MAX_EXPRESSION = 500
#: `2 ** 100000` would take seconds and megabytes: exponents and results stay below these.
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4096

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max,
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "floor": math.floor, "ceil": math.ceil,
    "factorial": math.factorial,
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


@tool
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly, e.g. "17 * 23" or "sqrt(2) / 3".

    Args:
        expression: Numbers with + - * / // % ** and parentheses; functions sqrt, log, exp,
            sin, cos, tan, abs, round, min, max, floor, ceil, factorial; constants pi and e.
    """
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**").replace("−", "-")
    if not text:
        raise ToolError("the expression is empty; pass e.g. '17 * 23'")
    if len(text) > MAX_EXPRESSION:
        raise ToolError(f"the expression is {len(text)} characters; the limit is {MAX_EXPRESSION}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"cannot parse {expression!r}: {exc.msg}") from None
    try:
        value = _eval(tree.body)
    except ZeroDivisionError:
        raise ToolError(f"division by zero in {expression!r}") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ToolError(f"{expression!r}: {exc}") from None
    return format_number(value)


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolError(f"the exponent {right} is too large (the limit is {MAX_EXPONENT})")
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}; constants: {', '.join(CONSTANTS)}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        func = FUNCTIONS.get(node.func.id)
        if func is None:
            raise ToolError(f"unknown function {node.func.id!r}; functions: {', '.join(FUNCTIONS)}")
        args = [_eval(a) for a in node.args]
        if func is math.factorial and (not args or args[0] > 1000):
            raise ToolError("factorial takes one whole number up to 1000")
        return _bounded(func(*args))
    raise ToolError(f"{ast.unparse(node)!r} is not arithmetic; use numbers, operators and the listed functions")


def _bounded(value: Any) -> Any:
    if isinstance(value, complex):
        raise ToolError("the result is a complex number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("the result is too large")
    return value


def format_number(value: float) -> str:
    """Integers exactly; floats to 12 significant digits, without a trailing ".0"."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


# --- units ------------------------------------------------------------------------------------

#: unit -> (dimension, size in the dimension's base unit: m, kg, s, m³); temperature is affine.
UNITS: dict[str, tuple[str, float]] = {
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
    "in": ("length", 0.0254), "ft": ("length", 0.3048), "yd": ("length", 0.9144),
    "mi": ("length", 1609.344), "nmi": ("length", 1852.0),
    "mg": ("mass", 1e-6), "g": ("mass", 0.001), "kg": ("mass", 1.0), "t": ("mass", 1000.0),
    "oz": ("mass", 0.028349523125), "lb": ("mass", 0.45359237), "st": ("mass", 6.35029318),
    "ms": ("time", 0.001), "s": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0),
    "d": ("time", 86400.0), "wk": ("time", 604800.0), "yr": ("time", 31557600.0),  # Julian year
    "ml": ("volume", 1e-6), "l": ("volume", 0.001), "m3": ("volume", 1.0),
    "tsp": ("volume", 4.92892159375e-6), "tbsp": ("volume", 1.478676478125e-5),
    "floz": ("volume", 2.95735295625e-5), "cup": ("volume", 2.365882365e-4),
    "pt": ("volume", 4.73176473e-4), "qt": ("volume", 9.46352946e-4), "gal": ("volume", 3.785411784e-3),
    "C": ("temperature", 1.0), "F": ("temperature", 1.0), "K": ("temperature", 1.0),
}
Unit = Literal[
    "mm", "cm", "m", "km", "in", "ft", "yd", "mi", "nmi",
    "mg", "g", "kg", "t", "oz", "lb", "st",
    "ms", "s", "min", "h", "d", "wk", "yr",
    "ml", "l", "m3", "tsp", "tbsp", "floz", "cup", "pt", "qt", "gal",
    "C", "F", "K",
]


@tool
def convert_units(value: float, from_unit: Unit, to_unit: Unit) -> str:
    """Convert a quantity between units of length, mass, time, volume or temperature.

    US customary volumes (cup, pt, qt, gal); yr is a Julian year of 365.25 days.

    Args:
        value: The number to convert.
        from_unit: The unit of `value`, e.g. km, lb, h, gal, C.
        to_unit: The unit wanted, of the same kind.
    """
    if from_unit not in UNITS or to_unit not in UNITS:
        bad = from_unit if from_unit not in UNITS else to_unit
        raise ToolError(f"unknown unit {bad!r}; units: {', '.join(UNITS)}")
    kind, size = UNITS[from_unit]
    to_kind, to_size = UNITS[to_unit]
    if kind != to_kind:
        raise ToolError(f"cannot convert {kind} ({from_unit}) to {to_kind} ({to_unit})")
    result = _temperature(value, from_unit, to_unit) if kind == "temperature" else value * size / to_size
    return f"{format_number(value)} {from_unit} = {format_number(round(result, 10))} {to_unit}"


def _temperature(value: float, from_unit: str, to_unit: str) -> float:
    kelvin = {"K": value, "C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15}[from_unit]
    if kelvin < 0:
        raise ToolError(f"{format_number(value)} {from_unit} is below absolute zero")
    return {"K": kelvin, "C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32}[to_unit]


@hookimpl
def register_tools(register: Callable[..., None]) -> None:
    register(calculate)
    register(convert_units)
