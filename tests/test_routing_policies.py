"""Each routing policy on its own, the cascade, the learned combiner, and `agentkit eval routing`.

Sources are small and real (in-memory BM25, a CSV glossary read by the dictionary source); the
semantic policy uses its model-free lexical embedder so that no encoder loads in unit tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_definitions import NOT_DEFINITIONAL, PHRASINGS, WHAT_IS_PHRASINGS

from agentkit.cli import cli
from agentkit.errors import ConfigError
from agentkit.eval.routing import Label, evaluate_routing, fit_router
from agentkit.knowledge.dictionary import DictionarySource
from agentkit.knowledge.memory import MemorySource
from agentkit.llm.base import Completion, TokenLogprob
from agentkit.routing.base import Query, Vote, route_class
from agentkit.routing.confidence import ConfidencePolicy
from agentkit.routing.dictionary import DictionaryPolicy
from agentkit.routing.judge import JudgePolicy
from agentkit.routing.learned import (
    FEATURES,
    LogisticModel,
    cross_validate,
    feature_vector,
)
from agentkit.routing.probe import ProbePolicy
from agentkit.routing.router import PolicyRouter
from agentkit.routing.rules import RulesPolicy
from agentkit.routing.semantic import LexicalEmbedder, SemanticPolicy
from agentkit.testing import FakeLLM
from agentkit.types import PARAMETRIC, Passage, RouteDecision


def papers() -> MemorySource:
    src = MemorySource("papers", "biomedical research: genes, proteins, cells and disease")
    src.add([
        Passage("p1", "Aspirin inhibits the production of prostaglandin E2 in inflamed tissue.", "Aspirin and PGE2"),
        Passage("p2", "Vitamin D deficiency is associated with bone fractures in older adults.", "Vitamin D"),
        Passage("p3", "The CRISPR Cas9 system repairs double strand breaks in human cells.", "Cas9 repair"),
    ])
    return src


def manual() -> MemorySource:
    src = MemorySource("manual", "the agentkit user manual: installation, configuration and the command line")
    src.add([Passage("m1", "Install agentkit with make install, then run make test.", "Installation")])
    return src


@pytest.fixture()
def glossary(tmp_path: Path) -> DictionarySource:
    path = tmp_path / "terms.csv"
    path.write_text("term,definition\nlambaste,beat with a cane; criticize severely\nnoun,a word naming a thing\n")
    return DictionarySource("glossary", "English words and their meanings", glossaries=[path], fuzzy=True)


def q(question: str, *sources: object) -> Query:
    return Query(question, {s.name: s for s in sources})  # type: ignore[attr-defined]


# --- rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("question", ["Hello!", "What is 12 times 7?", "17 + 25", "Is 9 an odd number?",
                                      "Write a limerick about tea.", "Translate 'cat' into French.",
                                      "Convert 3 hours to minutes."])
def test_rules_send_small_talk_arithmetic_and_writing_to_the_model(question: str) -> None:
    vote = RulesPolicy().assess(q(question, papers()))
    assert vote.targets == [PARAMETRIC] and vote.decisive
    assert vote.signals["rules:parametric"] == 1.0


@pytest.mark.parametrize("question", ["Aspirin inhibits the production of PGE2.", "What does the CLI do?",
                                      "How many patients were in the trial?"])
def test_rules_stay_silent_on_questions_of_fact(question: str) -> None:
    vote = RulesPolicy().assess(q(question, papers()))
    assert vote.targets == [] and vote.signals["rules:parametric"] == 0.0


def test_rules_from_config_route_keywords_and_patterns_to_a_source() -> None:
    policy = RulesPolicy({"manual": {"patterns": {"a CLI question": r"\bagentkit \w+ command\b"},
                                     "keywords": ["install"]}})
    assert policy.assess(q("How do I install it?", papers(), manual())).targets == ["manual"]
    assert policy.assess(q("What does the agentkit chat command do?", papers(), manual())).targets == ["manual"]
    # A rule for a source that is not configured for this question is ignored.
    assert policy.assess(q("How do I install it?", papers())).targets == []


def test_an_invalid_rule_is_a_config_error_naming_the_target() -> None:
    with pytest.raises(ConfigError, match=r"router.rules.manual: pattern '\(unclosed' is not a valid regex"):
        RulesPolicy({"manual": {"patterns": ["(unclosed"]}})


# --- dictionary ----------------------------------------------------------------------------------


def test_dictionary_policy_on_explicit_definition_requests(glossary: DictionarySource) -> None:
    policy = DictionaryPolicy()
    for question in ("Define the word lambaste.", "What does 'lambaste' mean?", "Meaning of lambaste?"):
        vote = policy.assess(q(question, papers(), glossary))
        assert vote.targets == ["glossary"] and vote.decisive, question
        assert vote.signals["dictionary:hit"] == 1.0


def test_what_is_a_word_goes_to_the_dictionary_only_when_it_has_the_word(glossary: DictionarySource) -> None:
    policy = DictionaryPolicy()
    assert policy.assess(q("What is a noun?", papers(), glossary)).targets == ["glossary"]
    missing = policy.assess(q("What is a zeppelin?", papers(), glossary))
    assert missing.targets == [] and missing.signals["dictionary:hit"] == 0.0
    # A respelling ("lambast" -> "lambaste") is not the word the user asked about.
    assert policy.assess(q("What is a lambast?", papers(), glossary)).targets == []
    assert policy.assess(q("What is the capital of Italy?", papers(), glossary)).targets == []


@pytest.mark.parametrize("template", PHRASINGS)
def test_dictionary_policy_in_any_phrasing(template: str, glossary: DictionarySource) -> None:
    question = template.format(w="lambaste")
    vote = DictionaryPolicy().assess(q(question, papers(), glossary))
    assert vote.targets == ["glossary"] and vote.decisive, question
    assert vote.signals["dictionary:shape"] == 1.0 and vote.signals["dictionary:hit"] == 1.0


@pytest.mark.parametrize("template", WHAT_IS_PHRASINGS)
def test_what_is_phrasings_need_the_word_in_the_dictionary(template: str, glossary: DictionarySource) -> None:
    assert DictionaryPolicy().assess(q(template.format(w="lambaste"), papers(), glossary)).targets == ["glossary"]
    assert DictionaryPolicy().assess(q(template.format(w="zeppelin"), papers(), glossary)).targets == []


@pytest.mark.parametrize("question", NOT_DEFINITIONAL)
def test_dictionary_policy_ignores_other_questions_even_about_words_it_has(question: str, tmp_path: Path) -> None:
    path = tmp_path / "words.csv"
    words = "report sales capital italy tides noun up answer python error life meaning french cat happy router"
    path.write_text("term,definition\n" + "".join(f"{w},a definition of {w}\n" for w in words.split()))
    every_word = DictionarySource("words", "English words and their meanings", glossaries=[path])
    vote = DictionaryPolicy().assess(q(question, papers(), every_word))
    assert vote.targets == [] and vote.signals["dictionary:shape"] == 0.0


def test_dictionary_policy_without_dictionaries_abstains() -> None:
    assert DictionaryPolicy().assess(q("Define the word lambaste.", papers())) == Vote()


# --- semantic ------------------------------------------------------------------------------------


def semantic(**kw: object) -> SemanticPolicy:
    return SemanticPolicy(LexicalEmbedder(), examples={
        "papers": ["Does aspirin reduce inflammation?", "Which genes control cell growth?"],
        "manual": ["How do I configure agentkit?", "Which command ingests files?"],
    }, **kw)  # type: ignore[arg-type]


def test_semantic_policy_picks_the_source_whose_examples_match() -> None:
    vote = semantic().assess(q("Which command configures agentkit?", papers(), manual()))
    assert vote.targets == ["manual"] and vote.decisive
    assert vote.signals["semantic:manual"] > vote.signals["semantic:papers"]


def test_semantic_policy_sends_clear_model_tasks_to_the_model() -> None:
    # The packaged examples include "Write a haiku about autumn leaves."
    vote = semantic().assess(q("Write a haiku about autumn.", papers(), manual()))
    assert vote.targets == [PARAMETRIC]
    assert vote.signals["semantic:margin"] >= 0.12


def test_semantic_policy_abstains_below_its_threshold() -> None:
    vote = semantic(threshold=0.3).assess(q("zyzzyva quokka", papers(), manual()))
    assert vote.targets == [] and "semantic:papers" in vote.signals


def test_a_source_holding_the_answer_beats_a_model_looking_question() -> None:
    notes = MemorySource("notes", "my notes")
    notes.add([Passage("n1", "Write a haiku about autumn: my haiku notes say leaves fall", "Haiku notes")])
    vote = semantic(content_threshold=0.5).assess(q("Write a haiku about autumn.", notes))
    assert vote.targets == ["notes"] and "semantic:notes:content" in vote.signals
    assert semantic(content_threshold=None).assess(q("Write a haiku about autumn.", notes)).targets == [PARAMETRIC]


# --- retrieval probe -----------------------------------------------------------------------------


def test_probe_reports_scores_and_picks_sources_with_matches() -> None:
    vote = ProbePolicy().assess(q("aspirin prostaglandin production", papers(), manual()))
    assert vote.targets == ["papers"] and not vote.decisive
    s = vote.signals
    assert s["probe:papers:top"] > 0 and s["probe:manual:top"] == 0
    assert s["probe:papers:coverage"] == 1.0 and s["probe:hits"] == 1.0
    assert s["probe:top"] == pytest.approx(math.log1p(s["probe:papers:top"]), abs=1e-3)


def test_probe_with_no_match_anywhere_suggests_the_model() -> None:
    vote = ProbePolicy().assess(q("zyzzyva quokka", papers(), manual()))
    assert vote.targets == [PARAMETRIC] and vote.signals["probe:hits"] == 0.0


# --- parametric confidence -----------------------------------------------------------------------


class LogprobLLM(FakeLLM):
    """Replies with fixed token log-probabilities, as the llama.cpp backend reports them."""

    def __init__(self, logprobs: list[float]) -> None:
        super().__init__("Paris")
        self.values = logprobs

    def chat(self, messages, options=None):  # type: ignore[no-untyped-def]
        base = super().chat(messages, options)
        assert options is not None and options.logprobs is not None
        lps = [TokenLogprob(f"t{i}", v, {f"t{i}": v, "x": v - 2.0}) for i, v in enumerate(self.values)]
        return Completion(base.text, base.usage, "stop", lps)


def test_confidence_policy_trusts_a_confident_draft() -> None:
    vote = ConfidencePolicy(LogprobLLM([-0.05, -0.1, -0.2])).assess(q("What is the capital of France?", papers()))
    assert vote.targets == [PARAMETRIC]
    assert vote.signals["confidence:mean"] == pytest.approx(-0.1167, abs=1e-3)
    assert vote.signals["confidence:min"] == -0.2
    assert 0 < vote.signals["confidence:entropy"] < math.log(2) + 1e-9


def test_confidence_policy_looks_up_an_unsure_draft() -> None:
    vote = ConfidencePolicy(LogprobLLM([-2.5, -3.0, -0.5])).assess(q("Who discovered CCL19?", papers()))
    assert vote.targets == ["papers"] and "unsure" in vote.reason


def test_confidence_policy_without_logprobs_abstains() -> None:
    vote = ConfidencePolicy(FakeLLM("Paris")).assess(q("What is the capital of France?", papers()))
    assert vote.targets == [] and vote.signals == {"confidence:available": 0.0}


# --- LLM judge -----------------------------------------------------------------------------------


def test_judge_schema_allows_only_real_targets(glossary: DictionarySource) -> None:
    llm = FakeLLM({"route": "glossary"})
    vote = JudgePolicy(llm).assess(q("What is a lambaste?", papers(), glossary))
    assert vote.targets == ["glossary"] and vote.signals["judge:dictionary"] == 1.0
    schema = llm.calls[-1][1].json_schema
    assert schema["properties"]["route"]["enum"] == [PARAMETRIC, "papers", "glossary"]
    assert "glossary: English words" in llm.last_prompt


def test_judge_ignores_an_invalid_reply() -> None:
    assert JudgePolicy(FakeLLM("not json")).assess(q("x", papers())).targets == []
    assert JudgePolicy(FakeLLM({"route": "nowhere"})).assess(q("x", papers())).signals["judge:invalid"] == 1.0


# --- the cascade ---------------------------------------------------------------------------------


class Fixed:
    calls_model = False

    def __init__(self, name: str, vote: Vote | Exception) -> None:
        self.name, self.vote, self.calls = name, vote, 0

    def assess(self, query: Query) -> Vote:
        self.calls += 1
        if isinstance(self.vote, Exception):
            raise self.vote
        return self.vote


def test_cascade_stops_at_the_first_decisive_vote() -> None:
    later = Fixed("later", Vote(["papers"], 0.9, "later", decisive=True))
    router = PolicyRouter([Fixed("first", Vote(["manual"], 0.8, "first", {"first:x": 1.0}, decisive=True)), later])
    d = router.decide("anything", {"papers": papers(), "manual": manual()})
    assert d.targets == ["manual"] and d.policy == "auto:first" and d.signals["first:x"] == 1.0
    assert later.calls == 0


def test_cascade_falls_back_to_the_last_tentative_vote_then_to_every_source() -> None:
    srcs = {"papers": papers(), "manual": manual()}
    router = PolicyRouter([Fixed("a", Vote(["manual"], 0.5, "a")), Fixed("b", Vote(["papers"], 0.6, "b")),
                           Fixed("c", Vote())])
    assert router.decide("anything", srcs).targets == ["papers"]
    d = PolicyRouter([Fixed("broken", RuntimeError("down")), Fixed("silent", Vote())]).decide("anything", srcs)
    assert d.targets == ["papers", "manual"] and d.policy == "auto:fallback"
    assert d.signals["broken:failed"] == 1.0


def test_a_failing_or_ill_typed_policy_is_named_not_silent() -> None:
    srcs = {"papers": papers(), "manual": manual()}
    # A whole router's decision instead of a Vote: before, an AttributeError swallowed in silence.
    wrong = Fixed("wrong", RouteDecision(["manual"], 1.0, "a decision, not a vote"))  # type: ignore[arg-type]
    d = PolicyRouter([wrong, Fixed("broken", RuntimeError("down"))]).decide("anything", srcs)
    assert d.policy == "auto:fallback" and d.signals["wrong:failed"] == 1.0
    assert d.reason == "no policy was sure (wrong, broken failed; see the log); searching every document source"
    with pytest.raises(TypeError, match="has no assess"):
        PolicyRouter([object()])  # type: ignore[list-item]


def test_no_sources_means_the_model() -> None:
    assert PolicyRouter([RulesPolicy()]).decide("What is CCL19?", {}).targets == [PARAMETRIC]


# --- the learned combiner ------------------------------------------------------------------------


def test_logistic_model_learns_a_separable_rule_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 3))
    y = ["parametric" if a > 0.5 else "dictionary" if b > 0.5 else "retrieve" for a, b, _ in x]
    model = LogisticModel.fit(x, y, features=["a", "b", "noise"])
    assert np.mean([p == t for p, t in zip(model.predict(x), y)]) >= 0.95
    assert cross_validate(x, y, folds=5) >= 0.9
    model.save(tmp_path / "router.json")
    again = LogisticModel.load(tmp_path / "router.json")
    assert again.predict(x) == model.predict(x)


def test_loading_a_missing_or_foreign_model_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="agentkit router fit"):
        LogisticModel.load(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ConfigError, match="fit it again"):
        LogisticModel.load(tmp_path / "bad.json")


LABELS = [
    *(Label(t, "parametric") for t in ("Hello!", "Thanks a lot!", "What is 4 plus 4?", "Write a poem about rain.",
                                       "Tell me a joke.", "Translate 'dog' into German.")),
    *(Label(t, "retrieve") for t in ("aspirin prostaglandin production", "vitamin D bone fractures",
                                     "Cas9 repairs double strand breaks", "Does aspirin inhibit PGE2?",
                                     "vitamin D deficiency in older adults", "CRISPR repair in human cells")),
    *(Label(t, "dictionary") for t in ("Define the word lambaste.", "What does 'noun' mean?", "Meaning of lambaste?",
                                       "What is a noun?", "Define noun.", "What does 'lambaste' mean?")),
]


#: Other questions, never fitted on: the learned router is scored on these.
HELD_OUT = [
    *(Label(t, "parametric") for t in ("Good morning!", "What is 9 times 6?", "Write a limerick about a cat.",
                                       "Thank you!")),
    *(Label(t, "retrieve") for t in ("Does vitamin D prevent fractures?", "prostaglandin E2 in inflamed tissue",
                                     "How does Cas9 repair breaks?", "aspirin and inflammation")),
    *(Label(t, "dictionary") for t in ("What is the meaning of lambaste?", "Define the word noun.",
                                       "lambaste definition", "What does the word noun mean?")),
]


def test_the_learned_router_routes_questions_it_was_not_fitted_on(glossary: DictionarySource) -> None:
    srcs = {"papers": papers(), "glossary": glossary}
    assert not {lb.question for lb in HELD_OUT} & {lb.question for lb in LABELS}
    cascade = PolicyRouter([RulesPolicy(), DictionaryPolicy(), ProbePolicy()])
    model, cv = fit_router(cascade, srcs, LABELS, folds=3)
    assert model.meta["policies"] == ["rules", "dictionary", "probe"] and model.meta["n"] == len(LABELS)
    assert cv >= 0.9  # each fold scored on questions left out of its fit (measured: 1.0)
    learned = PolicyRouter(cascade.policies, model=model)
    report = evaluate_routing(learned, srcs, HELD_OUT)
    assert report.policy == "learned"
    assert report.accuracy == 1.0, report.errors
    d = learned.decide("Is vitamin D deficiency linked to fractures?", srcs)
    assert d.targets == ["papers"] and d.signals["learned:retrieve"] > 0.5
    assert set(feature_vector(d.signals).nonzero()[0]) <= set(range(len(FEATURES)))


def test_route_class_of_targets(glossary: DictionarySource) -> None:
    srcs = {"papers": papers(), "glossary": glossary}
    assert route_class([PARAMETRIC], srcs) == "parametric"
    assert route_class(["glossary"], srcs) == "dictionary"
    assert route_class(["papers", "glossary"], srcs) == "retrieve"


# --- `agentkit eval routing` and `agentkit router fit` ------------------------------------------


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "aspirin.md").write_text("# Aspirin\n\nAspirin inhibits the production of prostaglandin E2.\n")
    (corpus / "vitd.md").write_text("# Vitamin D\n\nVitamin D deficiency is linked to bone fractures.\n")
    (corpus / "cas9.md").write_text("# CRISPR\n\nCRISPR Cas9 repairs double strand breaks in human cells.\n")
    (tmp_path / "terms.csv").write_text("term,definition\nlambaste,beat with a cane\nnoun,a word naming a thing\n")
    (tmp_path / "agentkit.yaml").write_text(
        f"data_dir: {tmp_path / 'data'}\n"
        "llm: {backend: fake}\n"
        "sources:\n"
        "  papers: {type: qdrant, description: biomedical research papers, path: qdrant, collection: papers}\n"
        f"  glossary: {{type: dictionary, description: English words, glossaries: [{tmp_path / 'terms.csv'}]}}\n"
        "router:\n"
        "  semantic: {embedder: lexical}\n"
        "  examples: {papers: ['Does aspirin inhibit prostaglandins?']}\n"
        "  model: router.json\n"
    )
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"question": lb.question, "route": lb.route}) + "\n" for lb in LABELS))
    (tmp_path / "held-out.jsonl").write_text(
        "".join(json.dumps({"question": lb.question, "route": lb.route}) + "\n" for lb in HELD_OUT))
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "agentkit.yaml"), "ingest", str(corpus), "--no-progress"])
    assert result.exit_code == 0, result.output
    return tmp_path


def test_eval_routing_json(workspace: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(workspace / "agentkit.yaml"), "eval", "routing",
                                      "--labels", str(workspace / "labels.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"accuracy", "per_route", "retrieval_rate", "median_ms"} <= set(report)
    assert report["accuracy"] >= 0.9, report["errors"]
    assert set(report["per_route"]) == {"parametric", "retrieve", "dictionary"}
    assert report["per_route"]["dictionary"]["recall"] == 1.0
    assert 0 < report["retrieval_rate"] < 1 and report["median_ms"] < 50


def test_router_fit_then_learned_policy(workspace: Path) -> None:
    cfg = workspace / "agentkit.yaml"
    result = CliRunner().invoke(cli, ["--config", str(cfg), "router", "fit", "--labels",
                                      str(workspace / "labels.jsonl"), "--folds", "3"])
    assert result.exit_code == 0, result.output
    assert (workspace / "router.json").is_file() and "cross-validated accuracy" in result.output
    cfg.write_text(cfg.read_text().replace("router:\n", "router:\n  policy: learned\n"))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "eval", "routing", "--labels",
                                      str(workspace / "held-out.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["policy"] == "learned" and report["accuracy"] == 1.0, report["errors"]
    result = CliRunner().invoke(cli, ["--config", str(cfg), "router", "explain", "What is a noun?"])
    assert "route: glossary" in result.output and "learned:dictionary" in result.output


def test_labels_file_errors_name_the_line(tmp_path: Path, workspace: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "hi", "route": "maybe"}\n')
    result = CliRunner().invoke(cli, ["--config", str(workspace / "agentkit.yaml"), "eval", "routing", "--labels", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:1: route 'maybe' is not one of parametric, retrieve, dictionary" in result.output


def test_router_config_rejects_rules_for_unknown_sources(tmp_path: Path) -> None:
    from agentkit.config import parse_config

    with pytest.raises(ConfigError, match=r"router.rules: no source named 'nowhere'"):
        parse_config("llm: {backend: fake}\nrouter: {rules: {nowhere: {keywords: [x]}}}\n")
