"""The agent loop: route -> retrieve -> assemble evidence -> reason (chain-of-thought) -> cited answer.

`stream()` is the loop; `ask()`, `aask()` and `astream()` drain it. Both kinds of knowledge are tools here:
external sources are searched, and the model's own knowledge is the `parametric` route.

Over 600 lines (about 980) because every step of `stream()` reads and updates one question's
state (the route, the evidence budget, deadlines, adapters, the tools called so far); kept in one
class, a question's path reads top to bottom. What a step computes lives elsewhere: evidence,
prompts, citations and the check in reasoning/, policies in routing/, backends in llm/ and knowledge/.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import itertools
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentkit.errors import ConfigError, InputError, RealModelForbidden, UnknownSource
from agentkit.knowledge.base import Filters, KnowledgeSource
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.reasoning.citations import REFUSAL, parse_reply
from agentkit.reasoning.cot import load_template
from agentkit.reasoning.evidence import assemble
from agentkit.types import (
    PARAMETRIC,
    Answer,
    AnswerEvent,
    ContentEvent,
    Event,
    Message,
    Passage,
    RetrievalEvent,
    RouteDecision,
    RouteEvent,
    Step,
    StepEvent,
    TokenEvent,
    WarningEvent,
)

if TYPE_CHECKING:
    from agentkit.config import AdapterSpec, AgentSettings, Config
    from agentkit.tools import Tool

#: Tokens kept free between the prompt and the context end, for template drift.
CONTEXT_MARGIN = 16
MEMORY_NOTE = "answered from the model's own memory: no source passage supports it"


class Router(Protocol):
    def decide(
        self, question: str, sources: Mapping[str, KnowledgeSource], history: Sequence[Message] = ()
    ) -> RouteDecision: ...


class Agent:
    """One model plus any number of knowledge sources.

    >>> agent = Agent(FakeLLM(), [MemorySource("notes")])      # doctest: +SKIP
    >>> agent.ask("What is agentkit?").citations               # doctest: +SKIP
    """

    def __init__(
        self,
        llm: LLM,
        sources: Sequence[KnowledgeSource] | Mapping[str, KnowledgeSource] = (),
        *,
        router: Router | None = None,
        settings: AgentSettings | None = None,
        config: Config | None = None,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        adapters: Mapping[str, AdapterSpec] | None = None,
    ) -> None:
        from agentkit.config import AgentSettings
        from agentkit.knowledge.parametric import ParametricSource
        from agentkit.routing.simple import SimpleRouter

        self.llm = llm
        if isinstance(sources, Mapping):
            self.sources: dict[str, KnowledgeSource] = dict(sources)
        else:
            self.sources = {s.name: s for s in sources}
        if PARAMETRIC in self.sources:
            raise InputError(f"{PARAMETRIC!r} is reserved for the model's own knowledge; rename that source")
        self.router: Router = router or SimpleRouter()
        self.settings = settings or AgentSettings()
        for source in self.sources.values():
            # Let a server's client give up within the agent's bound too, with its own, more
            # precise error (and without a request left running after the agent moved on).
            cap = getattr(source, "cap_timeout", None)
            if callable(cap):
                cap(self.settings.source_timeout)
        self.config = config
        #: The model as a knowledge tool: consulted for a draft when a route mixes it with sources.
        self.parametric = ParametricSource(llm)
        #: Set when the backend refused a grammar: the quote reader then checks quotes as text.
        self._no_grammar = False
        #: One call's hard cap on each reply (a request's max_tokens) and its sampling seed.
        self._cap: int | None = None
        self._seed: int | None = None
        #: The focus's sentence encoder (agent.focus_embedder), made on first use.
        self._encoder: Any = None
        self._check: Any = None
        #: Tokens of each prompt template on its own (no question, history or evidence).
        self._static_tokens: dict[str, int] = {}
        #: Tools the model may call; with any, it gets at least one action, even on the parametric route.
        self.tools: dict[str, Tool] = {}
        if tools:
            from agentkit.tools import tool as as_tool

            self.tools = {t.name: t for t in map(as_tool, tools)}
        #: LoRA adapters bound to sources or route classes; the route picks them per question.
        self.adapters: dict[str, AdapterSpec] = dict(adapters or {})
        if self.adapters:
            self._check_adapters()

    @classmethod
    def from_config(cls, config: str | Path | Config | None = None, **overrides: Any) -> Agent:
        """Build an agent from a YAML file (or a loaded Config); `None` uses the default lookup.

        Overrides go by config section and are merged into it, then validated like the file:
        `Agent.from_config(None, agent={"max_tokens": 48}, sources={"notes": {"type": "memory"}})`.
        `llm=`, `router=`, `tools=` and `adapters=` also take ready objects (an LLM, a Router, a
        list of Tools or functions, {name: AdapterSpec}), used as they are.
        """
        from agentkit.config import Config, load_config
        from agentkit.plugins import build_llm, build_source, build_tools
        from agentkit.routing.build import build_router

        cfg = config if isinstance(config, Config) else load_config(config)
        llm, router, tools, adapters, sections = _split_overrides(overrides)
        if sections:
            cfg = cfg.with_overrides(sections)
        llm = llm or build_llm(cfg.llm, config_dir=cfg.base_dir)
        sources = {name: build_source(name, spec, cfg.data_dir, config_dir=cfg.base_dir)
                   for name, spec in cfg.sources.items()}
        router = router or build_router(cfg, llm)
        tools = build_tools(cfg.tools, origin=cfg.origin) if tools is None else tools
        if adapters is None and cfg.adapters:
            adapters = cfg.adapters
            register = getattr(llm, "add_adapter", None)
            if register is None:
                raise ConfigError(
                    f"{cfg.origin}: adapters: the {cfg.llm_backend} backend cannot switch LoRA adapters; "
                    "use backend llama_cpp or transformers, or remove the adapters section"
                )
            for name, spec in cfg.adapters.items():
                if name not in getattr(llm, "adapter_names", ()):
                    register(name, cfg.resolve_path(spec.path))
        return cls(llm, sources, router=router, settings=cfg.agent, config=cfg, tools=tools, adapters=adapters)

    # --- public API ------------------------------------------------------------------------

    def ask(
        self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None,
        max_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
        filters: Filters | None = None,
    ) -> Answer:
        """Answer `question`; `route` forces the targets (source names and/or "parametric");
        `max_tokens`, `temperature` and `seed` apply to this call only (see `stream`); `filters`
        (metadata key -> value, or a list of values) narrow every source search."""
        answer = None
        for event in self.stream(question, history=history, route=route, max_tokens=max_tokens,
                                 temperature=temperature, seed=seed, filters=filters):
            if isinstance(event, AnswerEvent):
                answer = event.answer
        assert answer is not None
        return answer

    async def aask(
        self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None,
        filters: Filters | None = None, **per_call: Any,
    ) -> Answer:
        """`ask()` in a worker thread; takes the same keywords."""
        return await asyncio.to_thread(self.ask, question, history=history, route=route, filters=filters, **per_call)

    async def astream(
        self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None,
        filters: Filters | None = None, **per_call: Any,
    ) -> AsyncIterator[Event]:
        """`stream()` for asyncio (same keywords): the loop runs in worker threads, the events come here.

        Leaving the `async for` early (or cancelling the task) stops generation after the token
        being made, as closing `stream()` does.
        """
        events = self.stream(question, history=history, route=route, filters=filters, **per_call)
        # The generator runs in worker threads one step at a time; the lock keeps the closing
        # step from meeting a step still running after a cancellation.
        lock = threading.Lock()
        end = object()

        def step() -> object:
            with lock:
                return next(events, end)

        def close() -> None:
            with lock:
                events.close()

        try:
            while (event := await asyncio.to_thread(step)) is not end:
                yield event  # type: ignore[misc]
        finally:
            await asyncio.to_thread(close)

    def stream(
        self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None,
        max_tokens: int | None = None, temperature: float | None = None, seed: int | None = None,
        filters: Filters | None = None,
    ) -> Iterator[Event]:
        """Run the loop, yielding events: route, retrievals/steps, tokens, warnings, the answer.
        TokenEvents are the model's reply as generated; ContentEvents the answer text agentkit
        composes (the quote reader's, streamed while the model copies its quote; see types.py).

        `max_tokens`, `temperature` and `seed` apply to this call only (an OpenAI request's
        fields): `max_tokens` caps every reply the model generates for the answer, the quote
        reader's forced quote included; `temperature` applies where the reply is free text (a
        grammar-forced reply is greedy). `filters` go to every source search (not to the
        router's probes). Closing the iterator (or Ctrl-C while iterating) stops generation;
        nothing is stored.
        """
        if max_tokens is not None or temperature is not None or seed is not None:
            call = self._for_call(max_tokens, temperature, seed)
            try:
                return (yield from call.stream(question, history=history, route=route, filters=filters))
            finally:
                # What the call built lazily (the focus encoder, the verifier) serves the next ones.
                self._encoder = self._encoder or call._encoder
                self._check = self._check or call._check
                self._no_grammar = self._no_grammar or call._no_grammar
        t0 = time.perf_counter()
        question = question.strip() if isinstance(question, str) else ""
        if not question:
            raise InputError("the question is empty; type a question, e.g. agentkit ask \"What is agentkit?\"")
        s = self.settings
        answer = Answer(question=question, text="")
        timings = answer.timings

        # 1. Route. A source that fails while the router probes it is reported, never taken for
        # "no match" in silence, and not searched again below.
        failed: dict[str, str] = {}
        decision = self._route(question, history, route, failed)
        answer.route = decision
        answer.adapters = self._adapters_for(decision)
        timings["route_ms"] = _ms(t0)
        yield RouteEvent(decision)
        for error in failed.values():
            answer.warnings.append(error)
            yield WarningEvent(error)

        # 2. Retrieve from the chosen sources; a failing source is reported, not fatal.
        t1 = time.perf_counter()
        results: list[list[Passage]] = []
        if decision.sources:
            for name, passages, error in self._search_many(decision.sources, question, s.top_k, failed, filters):
                if error:
                    failed[name] = error
                    answer.warnings.append(error)
                    yield WarningEvent(error)
                    continue
                results.append(passages)
                yield RetrievalEvent(name, question, passages)
            if PARAMETRIC in decision.targets:
                draft = self.parametric.search(question)
                results.append(draft)
                yield RetrievalEvent(PARAMETRIC, question, draft)

        timings["retrieve_ms"] = _ms(t1)

        # 3. Optionally let the model act: search again or call a tool (grammar-constrained JSON).
        if self.tools or (s.max_steps > 1 and decision.sources):
            t_act = time.perf_counter()
            yield from self._act(question, decision, results, answer, filters)
            # Its own figure: the model choosing actions (and tools running) is not retrieval.
            timings["act_ms"] = _ms(t_act)

        # 4. Build the prompt within the context window.
        if decision.sources and not any(p.source != PARAMETRIC for r in results for p in r):
            searched = [n for n in decision.sources if n not in failed]
            if searched:
                note = "no passage matched in " + ", ".join(searched) + "; " + MEMORY_NOTE
            else:  # nothing was searched: "no match" would be a claim about the documents
                note = "no source could be searched (" + ", ".join(decision.sources) + " failed); " + MEMORY_NOTE
            answer.warnings.append(note)
            yield WarningEvent(note)
        t2 = time.perf_counter()
        if self._reads_quotes(decision, results) and (yield from self._read(question, history, results, answer)):
            # 5-6. The quote reader: focused sentences, a quote, a short answer checked against it.
            timings["generate_ms"] = _ms(t2)
            yield from self._cut_off(answer)
            timings["total_ms"] = _ms(t0)
            yield AnswerEvent(answer)
            return
        messages, evidence = self._build_prompt(question, history, results, answer)
        answer.passages = evidence
        answer.from_memory = all(p.source == PARAMETRIC for p in evidence)
        if answer.from_memory:
            answer.kind = "memory"

        # 5. Generate, streaming tokens.
        reply: list[str] = []
        yield from self._generate(messages, answer, reply)
        timings["generate_ms"] = _ms(t2)

        # 6. Parse: reasoning, answer, citations mapped to the numbered evidence; check each citation.
        yield from self._parse(reply[0], evidence, answer)
        if self._unsupported(decision, answer) and self._may_search_again(decision):
            # 7. Re-retrieval: one reformulated search, then answer again over the larger evidence.
            t3 = time.perf_counter()
            grown = yield from self._search_again(question, decision, results, answer, failed, filters)
            if grown:
                messages, evidence = self._build_prompt(question, history, results, answer)
                answer.passages = evidence
                answer.from_memory = all(p.source == PARAMETRIC for p in evidence)
                reply.clear()
                yield from self._generate(messages, answer, reply)
                yield from self._parse(reply[0], evidence, answer)
            timings["reretrieve_ms"] = _ms(t3)
        if self._unsupported(decision, answer) and s.refuse_unsupported:
            answer.withheld = answer.text
            note = ("no cited source supports the model's answer, so it was withheld (see Answer.withheld)"
                    if answer.text.strip() else "the model gave no answer")
            answer.text = REFUSAL
            answer.kind = "refusal"
            answer.citations = []
            answer.warnings.append(note)
            yield WarningEvent(note)
        elif REFUSAL.lower().rstrip(".") in answer.text.lower():
            answer.kind = "refusal"
        elif not answer.text.strip():
            # agent.refuse_unsupported is off, so no refusal stands in: say why nothing shows.
            note = "the model gave no answer: its reply ended before one"
            answer.warnings.append(note)
            yield WarningEvent(note)
        yield from self._cut_off(answer)
        timings["total_ms"] = _ms(t0)
        yield AnswerEvent(answer)

    def _for_call(self, max_tokens: int | None, temperature: float | None, seed: int | None) -> Agent:
        """This agent with one call's own limits; the model, sources and caches are shared."""
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
            raise InputError(f"max_tokens must be a whole number of at least 1, got {max_tokens!r}")
        if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                        or not 0.0 <= temperature <= 2.0):
            raise InputError(f"temperature must be between 0 and 2, got {temperature!r}")
        call = copy.copy(self)
        update: dict[str, Any] = {}
        if max_tokens is not None:
            update["max_tokens"] = max_tokens
        if temperature is not None:
            update["temperature"] = float(temperature)
        call.settings = self.settings.model_copy(update=update)
        call._cap, call._seed = max_tokens, seed
        return call

    def close(self) -> None:
        for source in self.sources.values():
            closer = getattr(source, "close", None)
            if closer is not None:
                closer()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the steps -------------------------------------------------------------------------

    def _route(
        self, question: str, history: Sequence[Message], forced: Sequence[str] | None,
        failures: dict[str, str] | None = None,
    ) -> RouteDecision:
        """The route; sources that fail while the router searches them land in `failures`."""
        if forced is None:
            return self.router.decide(question, self._routing_view({} if failures is None else failures), history)
        unknown = [t for t in forced if t != PARAMETRIC and t not in self.sources]
        if unknown:
            raise UnknownSource(
                f"unknown source(s) {', '.join(map(repr, unknown))}; configured: "
                f"{', '.join([PARAMETRIC, *self.sources])}"
            )
        return RouteDecision(list(forced), 1.0, "route chosen by the caller", {}, "forced")

    def _adapters_for(self, decision: RouteDecision) -> dict[str, float]:
        """The adapters bound to this route: by source, else by route class, else the defaults."""
        if not self.adapters:
            return {}
        from agentkit.routing.base import route_class

        kind = route_class(decision.targets, self.sources)
        chosen = {n: a.scale for n, a in self.adapters.items() if set(a.sources) & set(decision.targets)}
        if not chosen:
            chosen = {n: a.scale for n, a in self.adapters.items() if kind in a.routes}
        if not chosen:
            chosen = {n: a.scale for n, a in self.adapters.items() if a.default}
        return chosen

    def _check_adapters(self) -> None:
        from agentkit.config import check_adapter_sources

        check_adapter_sources(self.adapters, self.sources)
        known = set(getattr(self.llm, "adapter_names", ()))
        missing = [n for n in self.adapters if n not in known]
        if missing:
            raise ConfigError(
                f"adapters {', '.join(map(repr, missing))} are bound but the model has no such adapter; "
                "register them with llm.add_adapter(name, path) (Agent.from_config does this for the "
                "config's adapters section)"
            )

    def _search_one(self, name: str, query: str, k: int, filters: Filters | None = None) -> list[Passage]:
        if filters:
            return self.sources[name].search(query, k=k, filters=filters)
        return self.sources[name].search(query, k=k)

    def _search_many(
        self, names: Sequence[str], query: str, k: int, failed: Mapping[str, str] | None = None,
        filters: Filters | None = None,
    ) -> Iterator[tuple[str, list[Passage], str]]:
        """(name, passages, error) per source, searched in parallel, each bounded by
        `agent.source_timeout`. Sources in `failed` (name -> error, from routing) are not
        searched again: a hung server would cost the timeout twice."""
        failed = failed or {}
        calls = {n: _Deadline.start(self._search_one, n, query, k, filters) for n in names if n not in failed}
        deadline = time.monotonic() + self.settings.source_timeout
        for name in names:
            if name in failed:
                continue  # reported once, when routing met it
            passages, error = calls[name].result(name, deadline, self.settings.source_timeout)
            yield name, passages, error

    def _routing_view(self, failures: dict[str, str]) -> dict[str, KnowledgeSource]:
        """The sources as the router sees them: each search bounded by `agent.source_timeout`,
        and each failure recorded in `failures`, so that the answer reports it."""
        return {name: _Guarded(source, name, self.settings.source_timeout, failures)  # type: ignore[misc]
                for name, source in self.sources.items()}

    def _act(
        self, question: str, decision: RouteDecision, results: list[list[Passage]], answer: Answer,
        filters: Filters | None = None,
    ) -> Iterator[Event]:
        """Let the model pick actions until it answers: search a routed source again, or call a
        tool. Replies are grammar-constrained JSON, so they parse; a tool's error goes back to the
        model as an observation. Bounded by `max_steps` (the first retrieval is a step), with at
        least one action when tools are configured; running out answers with what was found."""
        names = decision.sources
        rounds = self.settings.max_steps - 1
        if self.tools:
            rounds = max(rounds, 1)
        tools = list(self.tools.values())
        template = load_template("tools" if tools else "action")
        schema = self._action_schema(names)
        srcs = [self.sources[n] for n in names]
        observations: list[str] = []
        calls: set[str] = set()
        for _ in range(rounds):
            so_far = [p for r in results for p in r if not p.source.startswith("tool:")]
            messages = template.render(
                question=question, sources=srcs, passages=so_far, tools=tools, observations=observations
            )
            options = GenerationOptions(max_tokens=256 if tools else 96, temperature=0.0, json_schema=schema)
            try:
                reply = self.llm.chat(messages, options)
            except NotImplementedError:
                # A backend without constrained output (transformers); config validation refuses
                # this for configs, an Agent built in code still answers.
                note = "the model backend cannot produce JSON actions; answering with what was found"
                answer.warnings.append(note)
                yield WarningEvent(note)
                return
            answer.usage += reply.usage
            try:
                action = json.loads(reply.text)
                kind = action["action"]
            except (ValueError, KeyError, TypeError):
                note = f"the model's next action is not valid JSON ({reply.text[:80]!r}); answering with what was found"
                answer.warnings.append(note)
                yield WarningEvent(note)
                return
            if kind == "call":
                key = json.dumps([action.get("tool"), action.get("arguments")], sort_keys=True, default=str)
                if key not in calls:  # the same call again would learn nothing new: answer
                    calls.add(key)
                    yield from self._call_tool(action, results, answer, observations)
                    continue
                answer.steps.append(Step("answer"))
                yield StepEvent(answer.steps[-1])
                return
            source, query = action.get("source"), str(action.get("query", "")).strip()
            if kind != "search" or not query or source not in names:
                answer.steps.append(Step("answer"))
                yield StepEvent(answer.steps[-1])
                return
            step = Step("search", source, query)
            answer.steps.append(step)
            yield StepEvent(step)
            for name, passages, error in self._search_many([source], query, self.settings.top_k, None, filters):
                if error:
                    answer.warnings.append(error)
                    yield WarningEvent(error)
                    continue
                step.n_passages = len(passages)
                results.append(passages)
                observations.append(f"search {name} {query!r}: {len(passages)} passage(s)")
                yield RetrievalEvent(name, query, passages)
        if self.settings.max_steps > 1:
            note = (f"the model was still acting after agent.max_steps ({self.settings.max_steps}) steps; "
                    "answering with what was found (raise agent.max_steps to allow more)")
            answer.warnings.append(note)
            yield WarningEvent(note)

    def _action_schema(self, names: list[str]) -> dict[str, Any]:
        """The JSON schema of the model's next action (llama.cpp turns it into a grammar)."""
        search: dict[str, Any] = {
            "type": "object",
            "properties": {
                "action": {"enum": ["answer", "search"]},
                "source": {"enum": names},
                "query": {"type": "string", "maxLength": 200},
            },
            "required": ["action", "source", "query"],
        }
        if not self.tools:
            return search
        from agentkit.tools import call_schema

        # One alternative per action, discriminated by "action" (and "tool"): each call's
        # arguments follow that tool's own schema. "answer" first: the simplest instance.
        options: list[dict[str, Any]] = [
            {"type": "object", "properties": {"action": {"const": "answer"}}, "required": ["action"],
             "additionalProperties": False},
        ]
        if names:
            search["properties"]["action"] = {"const": "search"}
            options.append({**search, "additionalProperties": False})
        options += [call_schema(t) for t in self.tools.values()]
        return {"oneOf": options}

    def _call_tool(
        self, action: dict[str, Any], results: list[list[Passage]], answer: Answer, observations: list[str]
    ) -> Iterator[Event]:
        """Run one tool call; a result becomes citable evidence, an error an observation to fix."""
        from agentkit.tools import run

        name, arguments = str(action.get("tool", "")), action.get("arguments") or {}
        tool = self.tools.get(name)
        if tool is None:
            observation = f"error: unknown tool {name!r}; tools: {', '.join(self.tools)}"
        else:
            observation = run(tool, arguments)
        step = Step("call", tool=name, arguments=arguments, observation=observation,
                    error=observation.startswith("error:"))
        answer.steps.append(step)
        yield StepEvent(step)
        args = arguments.items() if isinstance(arguments, dict) else ()
        call = f"{name}({', '.join(f'{k}={json.dumps(v, ensure_ascii=False)}' for k, v in args)})"
        observations.append(f"{call} -> {observation}")
        if step.error:
            return
        key = json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)
        results.append([Passage(
            id=f"tool:{name}#{hashlib.sha1(key.encode()).hexdigest()[:12]}",
            text=f"{call} = {observation}",
            title=f"tool {name}",
            source=f"tool:{name}",
            # Above any min_score: the model asked for this result.
            score=1.0,
            metadata={"tool": name, "arguments": arguments},
            uri=f"tool://{name}",
        )])

    def _build_prompt(
        self,
        question: str,
        history: Sequence[Message],
        results: list[list[Passage]],
        answer: Answer,
    ) -> tuple[list[Message], list[Passage]]:
        s = self.settings
        template = load_template("answer" if any(results) else "parametric")
        question, history, room = self._fit_fixed(template, question, history, answer)
        evidence: list[Passage] = []
        if any(results):
            evidence = assemble(results, room, self.llm.count_tokens, s.min_score)
            if not evidence:
                template = load_template("parametric")
                answer.warnings.append("no room was left in the context for evidence; " + MEMORY_NOTE)
        return template.render(history, question=question, passages=evidence), evidence

    def _fit_fixed(
        self, template: Any, question: str, history: Sequence[Message], answer: Answer
    ) -> tuple[str, list[Message], int]:
        """(question, history, evidence room): the prompt without evidence made to fit the context,
        and the tokens left for evidence (at most `agent.evidence_tokens`)."""
        s = self.settings
        llm = self.llm
        room = llm.context_length - s.max_tokens - CONTEXT_MARGIN
        history = list(history)

        # Fixed cost: template, history and question with no evidence. A cheap upper bound (the
        # template's own tokens, counted once, plus the parts) spares a render when it fits;
        # otherwise drop old history first, then trim the question, so the prompt always fits.
        static = self._static_tokens.get(template.name)
        if static is None:
            static = self._static_tokens[template.name] = llm.count_message_tokens(template.render(question="", passages=[]))
        bare = static + llm.count_tokens(question) + 8
        # History gives way to the evidence budget (a long chat must not crowd out the sources),
        # oldest user/assistant pair first. Each message is counted once: re-rendering the prompt
        # after every dropped pair made 1,000 messages take minutes.
        reserve = 0 if template.name == "parametric" else s.evidence_tokens
        sizes = [llm.count_tokens(m.content) + 8 for m in history]
        kept, drop = sum(sizes), 0
        while drop < len(history) and bare + kept > room - reserve:
            kept -= sum(sizes[drop : drop + 2])
            drop += 2
        history = history[drop:]
        fixed = bare + kept
        if fixed > room:
            fixed = llm.count_message_tokens(template.render(history, question=question, passages=[]))
        while fixed > room and history:  # only if a template costs more than the bound above
            history = history[max(2, len(history) // 4 // 2 * 2) :]
            fixed = llm.count_message_tokens(template.render(history, question=question, passages=[]))
        if fixed > room:
            question, note = self._trim_question(question, template, room)
            answer.warnings.append(note)
            fixed = llm.count_message_tokens(template.render(history, question=question, passages=[]))
        return question, history, max(0, min(s.evidence_tokens, room - fixed))

    # --- the quote reader -------------------------------------------------------------------------

    def _reads_quotes(self, decision: RouteDecision, results: list[list[Passage]]) -> bool:
        """Documents alone answer (no model draft to weigh), and the quote reader is on."""
        return (self.settings.reader == "quote" and bool(decision.sources) and PARAMETRIC not in decision.targets
                and any(p.source != PARAMETRIC for r in results for p in r))

    def _read(
        self, question: str, history: Sequence[Message], results: list[list[Passage]], answer: Answer
    ) -> Generator[Event, None, bool]:
        """Focus on the best sentences, refuse when the question's premises are not in them, else let
        the model quote one and answer from it (reasoning/reader.py). False when no evidence fits
        the context: the caller then answers as without sources."""
        from agentkit.reasoning import reader
        from agentkit.reasoning.definitions import definition_answer, is_definitional
        from agentkit.reasoning.evidence import rank_evidence

        s = self.settings
        template = load_template("grounded")
        question_fit, history, room = self._fit_fixed(template, question, history, answer)
        ranked = [p for p in rank_evidence(results, room, self.llm.count_tokens, s.min_score) if p.source != PARAMETRIC]
        if not ranked:
            return False
        definition = definition_answer(question, ranked) if is_definitional(question) else None
        if definition is not None:
            # A dictionary has the word: its senses, quoted and cited, are the answer.
            answer.passages, answer.kind = ranked, "definition"
            answer.text, answer.citations = definition
            yield ContentEvent(answer.text)
            return True
        t_focus = time.perf_counter()
        try:
            plan = reader.plan(question, ranked, top=s.focus_sentences, embedder=self._sentence_encoder(),
                               min_score=s.focus_min_score, span_margin=s.quote_span_margin,
                               ambiguity_margin=s.ambiguity_margin)
        except RealModelForbidden:  # a unit test without the encoder: words alone
            plan = reader.plan(question, ranked, top=s.focus_sentences)
        answer.timings["focus_ms"] = _ms(t_focus)
        answer.passages = plan.passages
        gaps = (plan.gaps if s.check_premises else []) + [why for why in (plan.distant, plan.ambiguous) if why]
        streamed = ""
        if not plan.candidates or gaps:
            reading = reader.Reading(REFUSAL, "refusal", [], gaps or ["no source sentence matches the question"])
        else:
            messages = template.render(history, question=question_fit, passages=plan.shown)
            reply: list[str] = []
            # The forced quote does not eat into the answer's max_tokens.
            quoted = max(self.llm.count_tokens(c.text) for c in plan.candidates[: s.quote_choices]) + 8
            # A request's max_tokens caps the whole reply, as OpenAI clients count it.
            # With the grammar the answer streams as the model copies its quote; without one the
            # quote is known only from the whole reply, and the answer comes at the end.
            live = reader.QuoteStream(plan, s.quote_choices)
            yield from self._generate(messages, answer, reply, grammar=plan.grammar(s.quote_choices),
                                      max_tokens=self._cap or s.max_tokens + quoted, content=live.feed)
            streamed = live.sent
            support = None if s.verify == "off" else self._verifier().support
            reading = reader.interpret(reply[0], plan, support, s.support_threshold)
        answer.text, answer.kind, answer.citations, answer.withheld = (
            reading.text, reading.kind, reading.citations, reading.withheld)
        # The rest of the text (the short answer, or all of it). Should it ever not continue what
        # streamed, Answer.text differs from the pieces and is what to show (the server says `revised`).
        if reading.text.startswith(streamed) and reading.text != streamed:
            yield ContentEvent(reading.text[len(streamed) :])
        for note in reading.warnings:
            answer.warnings.append(note)
            yield WarningEvent(note)
        return True

    def _sentence_encoder(self) -> Any | None:
        if self.settings.focus_embedder == "none":
            return None
        if self._encoder is None:
            from agentkit.knowledge.embeddings import OnnxEmbedder
            from agentkit.reasoning.focus import SentenceEncoder

            self._encoder = SentenceEncoder(OnnxEmbedder("all-MiniLM-L6-v2"))
        return self._encoder

    def _verifier(self) -> Any:
        """The citation check named by `agent.verify` (built once: the judge caches verdicts)."""
        if self._check is None:
            from agentkit.reasoning.verify import build_verifier

            self._check = build_verifier(self.settings.verify, self.llm)
        return self._check

    def _trim_question(self, question: str, template: Any, room: int) -> tuple[str, str]:
        llm = self.llm
        n = llm.count_tokens(question)
        keep = len(question)
        trimmed = question
        while keep > 1 and llm.count_message_tokens(template.render(question=trimmed, passages=[])) > room:
            keep = int(keep * 0.8)
            trimmed = question[:keep].rstrip() + " …"
        note = (
            f"the question was {n} tokens and did not fit the model's context of "
            f"{llm.context_length} tokens; it was trimmed to {llm.count_tokens(trimmed)} tokens "
            f"(raise llm.n_ctx or shorten the question)"
        )
        return trimmed, note

    # --- generation, the citation check and re-retrieval ------------------------------------------

    def _generate(
        self, messages: list[Message], answer: Answer, out: list[str], grammar: str | None = None,
        max_tokens: int | None = None, content: Callable[[str], str] | None = None,
    ) -> Iterator[Event]:
        """Stream one reply; its text is appended to `out`. Closing the stream stops the model.
        A `grammar` the backend cannot honour is dropped (the reply is then checked as text).
        `content` is given each token of a grammar-forced reply; what it returns streams as
        the answer's text (a ContentEvent)."""
        s = self.settings
        if grammar is not None and self._no_grammar:
            grammar = None
        options = GenerationOptions(
            max_tokens=max_tokens or s.max_tokens, temperature=0.0 if grammar else s.temperature,
            repeat_penalty=1.0 if grammar else s.repeat_penalty, adapters=answer.adapters or None, grammar=grammar,
            seed=self._seed,
        )
        pieces: list[str] = []
        t0 = time.perf_counter()
        try:
            stream = iter(self.llm.stream(messages, options))
            first = next(stream, None)
        except NotImplementedError:
            if grammar is None:
                raise
            self._no_grammar = True
            options.grammar = None
            stream = iter(self.llm.stream(messages, options))
            first = next(stream, None)
        try:
            for delta in itertools.chain([first] if first is not None else [], stream):
                if delta.text:
                    if "ttft_ms" not in answer.timings:
                        # From the start of this generation: the prompt's evaluation is the wait.
                        answer.timings["ttft_ms"] = _ms(t0)
                    pieces.append(delta.text)
                    yield TokenEvent(delta.text)
                    text = content(delta.text) if content is not None and options.grammar is not None else ""
                    if text:
                        yield ContentEvent(text)
                if delta.usage is not None:
                    answer.usage += delta.usage
                if delta.finish_reason is not None:
                    answer.finish_reason = delta.finish_reason
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        out.append("".join(pieces))

    def _cut_off(self, answer: Answer) -> Iterator[Event]:
        """Warn when the model's reply ended at max_tokens rather than where the model ended it."""
        if answer.finish_reason != "length":
            return
        if self._cap is not None:
            note = (f"the answer was cut off at max_tokens ({self._cap} tokens, set by the request); "
                    "send a larger max_tokens to let it finish")
        else:
            n = self.settings.max_tokens
            note = (f"the answer was cut off at agent.max_tokens ({n} tokens); raise it in the config "
                    f"(agent: {{max_tokens: {2 * n}}}) to let it finish")
        answer.warnings.append(note)
        yield WarningEvent(note)

    def _parse(self, reply: str, evidence: list[Passage], answer: Answer) -> Iterator[Event]:
        from agentkit.reasoning.verify import check_citations

        parsed = parse_reply(reply, evidence)
        answer.reasoning, answer.text, answer.citations = parsed.reasoning, parsed.text, parsed.citations
        notes = list(parsed.warnings)
        if self.settings.verify != "off":
            external = [c for c in answer.citations if c.passage.source != PARAMETRIC]
            check = check_citations(external, self._verifier(), self.settings.support_threshold)
            for c in check.unsupported:
                notes.append(
                    f"citation [{c.marker}] ({c.passage.id}) does not appear to support "
                    f"{_short(c.sentence)!r} (support {c.support:.2f})"
                )
            for c in check.partial:
                notes.append(f"citation [{c.marker}] ({c.passage.id}) supports only part of {_short(c.sentence)!r}")
        for w in notes:
            answer.warnings.append(w)
            yield WarningEvent(w)

    def _unsupported(self, decision: RouteDecision, answer: Answer) -> bool:
        """Sources were searched and gave evidence, yet no citation of the answer holds up."""
        if self.settings.verify == "off" or not decision.sources:
            return False
        if not any(p.source != PARAMETRIC for p in answer.passages):
            return False  # nothing was found: the answer is already marked as from memory
        if REFUSAL.lower().rstrip(".") in answer.text.lower():
            return False
        if any(c.passage.source == PARAMETRIC for c in answer.citations):
            return False  # a mixed route: the model's own draft is a legitimate source
        return not any(c.supported for c in answer.citations)

    def _may_search_again(self, decision: RouteDecision) -> bool:
        return self.settings.reretrieve and bool(decision.sources)

    def _search_again(
        self, question: str, decision: RouteDecision, results: list[list[Passage]], answer: Answer,
        failed: Mapping[str, str] | None = None, filters: Filters | None = None,
    ) -> Iterator[Event]:
        """Reformulate once and search the routed sources; True when new passages were found.
        Takes one step of `max_steps` (the first retrieval is step 1)."""
        used = 1 + sum(1 for st in answer.steps if st.action != "answer")
        if used >= self.settings.max_steps:
            return False
        query = self._reformulate(question, answer)
        step = Step("retry", ",".join(decision.sources), query)
        answer.steps.append(step)
        yield StepEvent(step)
        seen = {p.id for r in results for p in r}
        fresh: list[Passage] = []
        for name, passages, error in self._search_many(decision.sources, query, self.settings.top_k, failed, filters):
            if error:
                answer.warnings.append(error)
                yield WarningEvent(error)
                continue
            yield RetrievalEvent(name, query, passages)
            fresh += [p for p in passages if p.id not in seen]
        step.n_passages = len(fresh)
        if fresh:
            # New passages first: the first answer's evidence did not hold up.
            results.insert(0, fresh)
        return bool(fresh)

    def _reformulate(self, question: str, answer: Answer) -> str:
        """A new query from the model (grammar-forced JSON); the question's key terms if it fails."""
        schema = {
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 160}},
            "required": ["query"],
        }
        messages = load_template("reformulate").render(question=question, query=question)
        try:
            reply = self.llm.chat(messages, GenerationOptions(max_tokens=64, temperature=0.0, json_schema=schema))
        except NotImplementedError:
            reply = None  # a backend without constrained output (transformers): the key terms below
        query = ""
        if reply is not None:
            answer.usage += reply.usage
            try:
                query = " ".join(str(json.loads(reply.text)["query"]).split())
            except (ValueError, KeyError, TypeError):
                query = ""
        if not query or query.casefold() == question.casefold():
            from agentkit.text import STOPWORDS, words

            query = " ".join(w for w in words(question) if w not in STOPWORDS) or question
        return query


#: `Agent.from_config` keywords that may be ready objects rather than config sections.
_OBJECTS = ("llm", "router", "tools", "adapters")


def _split_overrides(overrides: dict[str, Any]) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """(llm, router, tools, adapters, config sections) from `from_config`'s keywords: a mapping
    (or a list of tool names) is a config override; anything else an object used as it is."""
    from pydantic import BaseModel

    from agentkit.config import Config

    known = [k for k in Config.model_fields if k != "origin"]
    unknown = [k for k in overrides if k not in known]
    if unknown:
        raise TypeError(
            f"Agent.from_config() got unknown keyword(s) {', '.join(map(repr, unknown))}; overrides are "
            f"config sections: {', '.join(known)}"
        )
    objects: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()  # agent=AgentSettings(...) is a section too
        if isinstance(value, Mapping):
            # {name: AdapterSpec} was dumped above only if it was a model; a dict of specs is a section.
            is_section = True
        else:
            # Tool names (or none: `tools=[]` means no tools) replace the config's `tools:` list.
            is_section = key == "tools" and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        if key in _OBJECTS and not is_section:
            objects[key] = value
        else:
            sections[key] = value
    return objects.get("llm"), objects.get("router"), objects.get("tools"), objects.get("adapters"), sections


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _source_failed(name: str, exc: BaseException, while_routing: bool = False) -> str:
    when = " while routing" if while_routing else ""
    return f"source {name!r} failed{when} ({type(exc).__name__}: {exc}); answering without it"


def _timed_out(name: str, seconds: float, while_routing: bool = False) -> str:
    when = " while routing" if while_routing else ""
    return (f"source {name!r} did not answer within {seconds:g} s{when} (agent.source_timeout); "
            "answering without it")


class _Deadline:
    """One search in a daemon thread, waited for until a deadline.

    A thread per search rather than a pool: a source that never answers keeps its thread, and
    a pool's hung workers would starve the next searches and block the interpreter's exit."""

    def __init__(self, fn: Callable[..., list[Passage]], args: tuple[Any, ...]) -> None:
        self._fn, self._args = fn, args
        self._value: list[Passage] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="agentkit-search", daemon=True)

    @classmethod
    def start(cls, fn: Callable[..., list[Passage]], *args: Any) -> _Deadline:
        call = cls(fn, args)
        call._thread.start()
        return call

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc

    def wait(self, deadline: float) -> bool:
        """True when the search finished before `deadline` (a time.monotonic() value)."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def result(self, name: str, deadline: float, timeout: float, while_routing: bool = False) -> tuple[list[Passage], str]:
        """(passages, "") or ([], the warning) once the search ends or the deadline passes."""
        if not self.wait(deadline):
            return [], _timed_out(name, timeout, while_routing)
        if self._error is not None:
            if not isinstance(self._error, Exception):
                raise self._error  # KeyboardInterrupt and the like are not a source's failure
            return [], _source_failed(name, self._error, while_routing)
        return self._value, ""


class _Guarded:
    """A source as the router sees it: searches bounded by `timeout`; a failure is recorded in
    `failures` (name -> warning) and raised again, so a policy sees it as before. Every other
    attribute is the source's own."""

    def __init__(self, source: KnowledgeSource, name: str, timeout: float, failures: dict[str, str]) -> None:
        self._source, self._name, self._timeout, self._failures = source, name, timeout, failures

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._source, attr)

    def search(self, query: str, k: int = 5, filters: Any = None) -> list[Passage]:
        from agentkit.errors import SourceUnavailable

        if self._name in self._failures:  # a second policy asking must not wait again
            raise SourceUnavailable(self._failures[self._name])
        search = self._source.search
        call = _Deadline.start(lambda: search(query, k=k) if filters is None else search(query, k=k, filters=filters))
        passages, error = call.result(self._name, time.monotonic() + self._timeout, self._timeout, while_routing=True)
        if error:
            self._failures[self._name] = error
            raise SourceUnavailable(error)
        return passages


def _short(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
