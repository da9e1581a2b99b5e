"""The agent loop: route -> retrieve -> assemble evidence -> reason (chain-of-thought) -> cited answer.

`stream()` is the loop; `ask()` and `aask()` drain it. Both kinds of knowledge are tools here:
external sources are searched, and the model's own knowledge is the `parametric` route.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentkit.errors import AgentParsingError, InputError, UnknownSource
from agentkit.knowledge.base import KnowledgeSource
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.reasoning.citations import parse_reply
from agentkit.reasoning.cot import load_template
from agentkit.reasoning.evidence import assemble
from agentkit.types import (
    PARAMETRIC,
    Answer,
    AnswerEvent,
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
    from agentkit.config import AgentSettings, Config

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
        self.config = config
        #: The model as a knowledge tool: consulted for a draft when a route mixes it with sources.
        self.parametric = ParametricSource(llm)
        self._pool: ThreadPoolExecutor | None = None

    @classmethod
    def from_config(cls, config: str | Path | Config | None = None, **overrides: Any) -> Agent:
        """Build an agent from a YAML file (or a loaded Config); `None` uses the default lookup."""
        from agentkit.config import Config, load_config
        from agentkit.plugins import build_llm, build_source
        from agentkit.routing.build import build_router

        cfg = config if isinstance(config, Config) else load_config(config)
        llm = overrides.pop("llm", None) or build_llm(cfg.llm)
        sources = {name: build_source(name, spec, cfg.data_dir) for name, spec in cfg.sources.items()}
        router = overrides.pop("router", None) or build_router(cfg, llm)
        return cls(llm, sources, router=router, settings=cfg.agent, config=cfg, **overrides)

    # --- public API ------------------------------------------------------------------------

    def ask(self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None) -> Answer:
        """Answer `question`; `route` forces the targets (source names and/or "parametric")."""
        answer = None
        for event in self.stream(question, history=history, route=route):
            if isinstance(event, AnswerEvent):
                answer = event.answer
        assert answer is not None
        return answer

    async def aask(
        self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None
    ) -> Answer:
        return await asyncio.to_thread(self.ask, question, history=history, route=route)

    def stream(
        self, question: str, *, history: Sequence[Message] = (), route: Sequence[str] | None = None
    ) -> Iterator[Event]:
        """Run the loop, yielding events: route, retrievals/steps, tokens, warnings, the answer.

        Closing the iterator (or Ctrl-C while iterating) stops generation; nothing is stored.
        """
        t0 = time.perf_counter()
        question = question.strip() if isinstance(question, str) else ""
        if not question:
            raise InputError("the question is empty; type a question, e.g. agentkit ask \"What is agentkit?\"")
        s = self.settings
        answer = Answer(question=question, text="")
        timings = answer.timings

        # 1. Route.
        decision = self._route(question, history, route)
        answer.route = decision
        timings["route_ms"] = _ms(t0)
        yield RouteEvent(decision)

        # 2. Retrieve from the chosen sources; a failing source is reported, not fatal.
        t1 = time.perf_counter()
        results: list[list[Passage]] = []
        if decision.sources:
            for name, passages, error in self._search_many(decision.sources, question, s.top_k):
                if error:
                    answer.warnings.append(error)
                    yield WarningEvent(error)
                    continue
                results.append(passages)
                yield RetrievalEvent(name, question, passages)
            if PARAMETRIC in decision.targets:
                draft = self.parametric.search(question)
                results.append(draft)
                yield RetrievalEvent(PARAMETRIC, question, draft)

        # 3. Optionally let the model ask for more searches (grammar-constrained JSON actions).
        if s.max_steps > 1 and decision.sources:
            yield from self._extra_steps(question, decision, results, answer)
        timings["retrieve_ms"] = _ms(t1)

        # 4. Build the prompt within the context window.
        if decision.sources and not any(p.source != PARAMETRIC for r in results for p in r):
            note = "no passage matched in " + ", ".join(decision.sources) + "; " + MEMORY_NOTE
            answer.warnings.append(note)
            yield WarningEvent(note)
        messages, evidence = self._build_prompt(question, history, results, answer)
        answer.passages = evidence
        answer.from_memory = all(p.source == PARAMETRIC for p in evidence)

        # 5. Generate, streaming tokens.
        t2 = time.perf_counter()
        options = GenerationOptions(max_tokens=s.max_tokens, temperature=s.temperature, repeat_penalty=s.repeat_penalty)
        pieces: list[str] = []
        stream = self.llm.stream(messages, options)
        try:
            for delta in stream:
                if delta.text:
                    pieces.append(delta.text)
                    yield TokenEvent(delta.text)
                if delta.usage is not None:
                    answer.usage += delta.usage
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        timings["generate_ms"] = _ms(t2)

        # 6. Parse: reasoning, answer, citations mapped to the numbered evidence.
        parsed = parse_reply("".join(pieces), evidence)
        answer.reasoning, answer.text, answer.citations = parsed.reasoning, parsed.text, parsed.citations
        for w in parsed.warnings:
            answer.warnings.append(w)
            yield WarningEvent(w)
        timings["total_ms"] = _ms(t0)
        yield AnswerEvent(answer)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for source in self.sources.values():
            closer = getattr(source, "close", None)
            if closer is not None:
                closer()

    def __enter__(self) -> Agent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the steps -------------------------------------------------------------------------

    def _route(self, question: str, history: Sequence[Message], forced: Sequence[str] | None) -> RouteDecision:
        if forced is None:
            return self.router.decide(question, self.sources, history)
        unknown = [t for t in forced if t != PARAMETRIC and t not in self.sources]
        if unknown:
            raise UnknownSource(
                f"unknown source(s) {', '.join(map(repr, unknown))}; configured: "
                f"{', '.join([PARAMETRIC, *self.sources])}"
            )
        return RouteDecision(list(forced), 1.0, "route chosen by the caller", {}, "forced")

    def _search_one(self, name: str, query: str, k: int) -> list[Passage]:
        return self.sources[name].search(query, k=k)

    def _search_many(self, names: Sequence[str], query: str, k: int) -> Iterator[tuple[str, list[Passage], str]]:
        """(name, passages, error) per source; sources are searched in parallel when several."""
        if len(names) == 1:
            try:
                yield names[0], self._search_one(names[0], query, k), ""
            except Exception as exc:  # noqa: BLE001 - any source failure becomes a warning
                yield names[0], [], _source_failed(names[0], exc)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=min(8, len(self.sources)), thread_name_prefix="agentkit-src")
        futures = {name: self._pool.submit(self._search_one, name, query, k) for name in names}
        deadline = time.monotonic() + self.settings.source_timeout
        for name, fut in futures.items():
            try:
                yield name, fut.result(timeout=max(0.0, deadline - time.monotonic())), ""
            except FutureTimeout:
                fut.cancel()
                yield name, [], f"source {name!r} did not answer within {self.settings.source_timeout:g} s; skipped"
            except Exception as exc:  # noqa: BLE001
                yield name, [], _source_failed(name, exc)

    def _extra_steps(
        self, question: str, decision: RouteDecision, results: list[list[Passage]], answer: Answer
    ) -> Iterator[Event]:
        template = load_template("action")
        names = decision.sources
        schema = {
            "type": "object",
            "properties": {
                "action": {"enum": ["answer", "search"]},
                "source": {"enum": names},
                "query": {"type": "string", "maxLength": 200},
            },
            "required": ["action", "source", "query"],
        }
        srcs = [self.sources[n] for n in names]
        for _ in range(self.settings.max_steps - 1):
            so_far = [p for r in results for p in r]
            messages = template.render(question=question, sources=srcs, passages=so_far)
            reply = self.llm.chat(messages, GenerationOptions(max_tokens=96, temperature=0.0, json_schema=schema))
            answer.usage += reply.usage
            try:
                action = json.loads(reply.text)
                kind, source, query = action["action"], action["source"], str(action["query"]).strip()
            except (ValueError, KeyError, TypeError) as exc:
                raise AgentParsingError(f"the model's next action is not valid JSON ({exc}): {reply.text!r}") from None
            if kind == "answer" or not query or source not in self.sources:
                answer.steps.append(Step("answer"))
                yield StepEvent(answer.steps[-1])
                return
            step = Step("search", source, query)
            answer.steps.append(step)
            yield StepEvent(step)
            for name, passages, error in self._search_many([source], query, self.settings.top_k):
                if error:
                    answer.warnings.append(error)
                    yield WarningEvent(error)
                    continue
                step.n_passages = len(passages)
                results.append(passages)
                yield RetrievalEvent(name, query, passages)

    def _build_prompt(
        self,
        question: str,
        history: Sequence[Message],
        results: list[list[Passage]],
        answer: Answer,
    ) -> tuple[list[Message], list[Passage]]:
        s = self.settings
        llm = self.llm
        room = llm.context_length - s.max_tokens - CONTEXT_MARGIN
        template = load_template("answer" if any(results) else "parametric")
        history = list(history)

        # Fixed cost: template, history and question with no evidence. Drop old history first,
        # then trim the question, so the prompt always fits.
        fixed = llm.count_message_tokens(template.render(history, question=question, passages=[]))
        while fixed > room and history:
            history = history[2:]
            fixed = llm.count_message_tokens(template.render(history, question=question, passages=[]))
        if fixed > room:
            question, note = self._trim_question(question, template, room)
            answer.warnings.append(note)
            fixed = llm.count_message_tokens(template.render(history, question=question, passages=[]))

        evidence: list[Passage] = []
        if any(results):
            budget = min(s.evidence_tokens, room - fixed)
            evidence = assemble(results, budget, llm.count_tokens, s.min_score)
            if not evidence:
                template = load_template("parametric")
                answer.warnings.append("no room was left in the context for evidence; " + MEMORY_NOTE)
        return template.render(history, question=question, passages=evidence), evidence

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


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)


def _source_failed(name: str, exc: Exception) -> str:
    return f"source {name!r} failed ({type(exc).__name__}: {exc}); answering without it"
