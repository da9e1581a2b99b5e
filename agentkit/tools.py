"""Tools the agent can call: `@tool` builds a JSON schema from a function's type hints and docstring.

`run(tool, arguments)` validates the arguments and always returns an observation string: a tool
that fails says so ("error: ...") to the model, which may try again within `agent.max_steps`.
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin

from agentkit.errors import AgentError

#: Observations longer than this are cut, so one chatty tool cannot fill the context.
MAX_OBSERVATION_CHARS = 2000


class ToolError(AgentError):
    """Raised by a tool (or by argument validation) with a message meant for the model to read."""


@dataclass
class Tool:
    """A function the agent may call, with the JSON schema of its keyword arguments."""

    name: str
    description: str
    #: JSON schema of the arguments: {"type": "object", "properties": ..., "required": [...]}.
    parameters: dict[str, Any]
    function: Callable[..., Any]
    #: Seconds before a call is abandoned (None = no limit).
    timeout: float | None = None
    #: Parameter name -> Enum class, so "celsius" reaches the function as Unit.CELSIUS.
    enums: dict[str, type[enum.Enum]] = field(default_factory=dict, repr=False)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments checked against `parameters` (ints accepted for floats); ToolError if not."""
        if not isinstance(arguments, Mapping):
            raise ToolError(f"arguments must be a JSON object, got {_show(arguments)}")
        props: dict[str, Any] = self.parameters.get("properties", {})
        unknown = [k for k in arguments if k not in props]
        if unknown:
            raise ToolError(f"unknown argument {unknown[0]!r}; {self.name} takes: {', '.join(props) or 'no arguments'}")
        missing = [k for k in self.parameters.get("required", []) if k not in arguments]
        if missing:
            raise ToolError(f"missing required argument {missing[0]!r}")
        out = {}
        for key, value in arguments.items():
            if value is None and key not in self.parameters.get("required", []):
                continue  # null for an optional argument means "leave it out"
            out[key] = _check(value, props[key], key)
            if key in self.enums and out[key] is not None:
                out[key] = self.enums[key](out[key])
        return out

    def signature(self) -> str:
        """`name(arg: type, ...)`, for prompts."""
        props = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        parts = [f"{k}: {_type_label(v)}" + ("" if k in required else " = optional") for k, v in props.items()]
        return f"{self.name}({', '.join(parts)})"


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Turn a typed function into a `Tool`; use as `@tool` or `@tool(name=..., timeout=...)`.

    Types: str, int, float, bool, Literal[...], Enum, list[X], dict, Optional[X]; a default makes
    a parameter optional. The docstring's first paragraph is the description and its `Args:`
    (Google) or `Parameters` (NumPy) section describes each parameter.
    """
    if function is None:
        return lambda f: tool(f, name=name, description=description, timeout=timeout)
    if isinstance(function, Tool):
        return function
    tool_name = name or function.__name__
    summary, arg_docs = parse_docstring(inspect.getdoc(function) or "")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except Exception as exc:  # an annotation that does not resolve
        raise TypeError(f"tool {tool_name!r}: cannot read the type hints ({exc})") from exc
    properties: dict[str, Any] = {}
    required: list[str] = []
    enums: dict[str, type[enum.Enum]] = {}
    for pname, param in inspect.signature(function).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name!r}: *{pname} / **{pname} cannot be described by a JSON schema; "
                            "list the parameters one by one")
        if pname not in hints:
            raise TypeError(f"tool {tool_name!r}: parameter {pname!r} has no type hint; annotate it "
                            f"(e.g. `{pname}: str`) so agentkit can build the tool's JSON schema")
        hint, extra_doc = _unwrap_annotated(hints[pname])
        try:
            schema = _schema_for(hint, optional_default=param.default is None)
        except TypeError as exc:
            raise TypeError(f"tool {tool_name!r}: parameter {pname!r}: {exc}") from None
        doc = arg_docs.get(pname) or extra_doc
        if doc:
            schema["description"] = doc
        if param.default is param.empty:
            required.append(pname)
        elif param.default is not None and _jsonable(param.default):
            schema["default"] = param.default.value if isinstance(param.default, enum.Enum) else param.default
        enum_cls = _enum_class(hint)
        if enum_cls is not None:
            enums[pname] = enum_cls
        properties[pname] = schema
    parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    return Tool(tool_name, description or summary or tool_name, parameters, function, timeout, enums)


def run(tool: Tool, arguments: Mapping[str, Any] | None, *, timeout: float | None = None,
        max_chars: int = MAX_OBSERVATION_CHARS) -> str:
    """Call `tool` with `arguments` and return the observation the model reads; never raises
    for a failing tool: validation errors, exceptions and timeouts become "error: ..."."""
    try:
        kwargs = tool.validate(arguments or {})
    except ToolError as exc:
        return f"error: {exc}"
    limit = timeout if timeout is not None else tool.timeout
    try:
        result = _call_with_timeout(tool, kwargs, limit) if limit else tool.function(**kwargs)
    except ToolError as exc:
        return f"error: {exc}"
    except TimeoutError:
        return f"error: {tool.name} did not finish within {limit:g} s"
    except Exception as exc:  # noqa: BLE001 - the model reads the error and may retry
        return f"error: {type(exc).__name__}: {exc}"
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def call_schema(tool: Tool, *, max_string: int = 200, max_items: int = 8) -> dict[str, Any]:
    """The JSON schema of one call of `tool` by the agent: {"action": "call", "tool", "arguments"}.

    Strings and lists get length bounds, so that a grammar-constrained reply always closes
    within the agent's token budget for an action."""
    return {
        "type": "object",
        "properties": {
            "action": {"const": "call"},
            "tool": {"const": tool.name},
            "arguments": _bounded(tool.parameters, max_string, max_items),
        },
        "required": ["action", "tool", "arguments"],
        "additionalProperties": False,
    }


def _bounded(schema: dict[str, Any], max_string: int, max_items: int) -> dict[str, Any]:
    # Descriptions go to the prompt, not the grammar.
    out = {k: v for k, v in schema.items() if k != "description"}
    if "properties" in out:
        out["properties"] = {k: _bounded(v, max_string, max_items) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _bounded(out[key], max_string, max_items)
    if "anyOf" in out:
        out["anyOf"] = [_bounded(v, max_string, max_items) for v in out["anyOf"]]
    if out.get("type") == "string":
        out.setdefault("maxLength", max_string)
    if out.get("type") == "array":
        out.setdefault("maxItems", max_items)
    return out


def _call_with_timeout(tool: Tool, kwargs: dict[str, Any], limit: float) -> Any:
    # A thread cannot be killed: on timeout it is left to finish in the background (daemon).
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = tool.function(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"agentkit-tool-{tool.name}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box.get("result")


# --- type hints -> JSON schema --------------------------------------------------------------

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _unwrap_annotated(hint: Any) -> tuple[Any, str]:
    if get_origin(hint) is typing.Annotated:
        base, *meta = get_args(hint)
        return base, next((m for m in meta if isinstance(m, str)), "")
    return hint, ""


def _enum_class(hint: Any) -> type[enum.Enum] | None:
    for candidate in (hint, *(a for a in get_args(hint) if _is_union(hint))):
        if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
            return candidate
    return None


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType)


def _schema_for(hint: Any, *, optional_default: bool = False) -> dict[str, Any]:
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"enum": [m.value for m in hint]}
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return {"enum": list(args)}
    if _is_union(hint):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1 and len(args) == 2:
            inner = _schema_for(members[0])
            # Optional[X] = None: leaving it out is how the model says "none".
            return inner if optional_default else {"anyOf": [inner, {"type": "null"}]}
        return {"anyOf": [_schema_for(a) for a in args]}
    if hint is list or origin is list:
        return {"type": "array", "items": _schema_for(args[0])} if args else {"type": "array"}
    if hint is dict or origin is dict:
        if args and args[0] is not str:
            raise TypeError(f"dict keys must be str for JSON, got {args[0]!r}")
        return {"type": "object", "additionalProperties": _schema_for(args[1])} if args else {"type": "object"}
    if hint is type(None):
        return {"type": "null"}
    raise TypeError(f"type {hint!r} is not supported; use str, int, float, bool, Literal, an Enum, "
                    "list[...], dict[str, ...] or Optional[...]")


def _jsonable(value: Any) -> bool:
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# --- validation -----------------------------------------------------------------------------

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


def _check(value: Any, schema: Mapping[str, Any], where: str) -> Any:
    """`value` if it matches the schema subset `tool` produces (a float that is a whole number
    counts as an integer); ToolError naming `where` otherwise."""
    if "anyOf" in schema:
        for option in schema["anyOf"]:
            try:
                return _check(value, option, where)
            except ToolError:
                continue
        raise ToolError(f"argument {where!r} must be {_type_label(schema)}, got {_show(value)}")
    if "enum" in schema:
        # `True == 1` in Python, so a bool only matches a bool.
        if not any(value == e and isinstance(value, bool) == isinstance(e, bool) for e in schema["enum"]):
            raise ToolError(f"argument {where!r} must be one of {', '.join(map(repr, schema['enum']))}; got {_show(value)}")
        return value
    kind = schema.get("type")
    if kind is None:
        return value
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        value = int(value)
    matches = isinstance(value, _PY_TYPES[kind])  # kept in a variable: no narrowing of `value`
    if not matches or (kind != "boolean" and isinstance(value, bool)):
        raise ToolError(f"argument {where!r} must be {_type_label(schema)}, got {_show(value)}")
    if kind == "number":
        return float(value)
    if kind == "array" and "items" in schema:
        return [_check(v, schema["items"], f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "object" and isinstance(schema.get("additionalProperties"), Mapping):
        return {k: _check(v, schema["additionalProperties"], f"{where}.{k}") for k, v in value.items()}
    return value


def _type_label(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(json.dumps(e) for e in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(_type_label(s) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    labels = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "true or false",
              "object": "an object", "null": "null"}
    if kind == "array":
        return f"a list of {_type_label(schema['items'])}" if "items" in schema else "a list"
    return labels.get(kind, str(kind))


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:59] + "…"


# --- docstrings -----------------------------------------------------------------------------

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?|Notes?|See Also)\s*:?\s*$")
_GOOGLE_ARG = re.compile(r"^\s*\**(\w+)\**\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^(\w+)\s*(?::\s*(.*))?$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google- or NumPy-style docstring."""
    lines = doc.expandtabs().splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    i = 0
    while i < len(lines) and not _SECTION.match(lines[i].strip()):
        summary.append(lines[i])
        i += 1
    while i < len(lines):
        header = _SECTION.match(lines[i].strip())
        i += 1
        if header is None:
            continue
        numpy = i < len(lines) and set(lines[i].strip()) == {"-"}
        if numpy:
            i += 1
        body: list[str] = []
        while i < len(lines) and not (lines[i][:1].strip() and _SECTION.match(lines[i].strip())):
            body.append(lines[i])
            i += 1
        if header.group(1) in ("Args", "Arguments", "Parameters", "Params"):
            args.update(_numpy_args(body) if numpy else _google_args(body))
    text = " ".join(" ".join(summary).split())
    return text, args


def _google_args(body: list[str]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    indent = None
    current = None
    for line in body:
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        match = _GOOGLE_ARG.match(line)
        if depth <= indent and match:
            current = match.group(1)
            out[current] = [match.group(3)]
        elif current is not None:
            out[current].append(line.strip())
    return {k: " ".join(" ".join(v).split()) for k, v in out.items()}


def _numpy_args(body: list[str]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in body:
        if not line.strip():
            continue
        if not line[:1].isspace():
            match = _NUMPY_ARG.match(line.strip())
            current = match.group(1) if match else None
            if current:
                out[current] = []
        elif current is not None:
            out[current].append(line.strip())
    return {k: " ".join(" ".join(v).split()) for k, v in out.items()}
