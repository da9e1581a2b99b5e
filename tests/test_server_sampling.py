"""Sampling fields of the bare model (`agentkit/raw`) through the server, with the official openai client.

The bundled SmolLM2 answers, so that "top_k reached the sampler" is something the text shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from agentkit import Agent, MemorySource, Message, Passage
from agentkit.llm.base import GenerationOptions
from agentkit.llm.llama_cpp import LlamaCppLLM
from agentkit.llm.models import FORBID_ENV
from agentkit.server.app import create_app
from agentkit.server.background import ServerThread

STORY = [{"role": "user", "content": "Write a long story about a cat who learns to sail."}]


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    llm = LlamaCppLLM(seed=1234)
    # Module fixtures are set up before the per-test guard fixture, so lift the guard here.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(FORBID_ENV, raising=False)
        llm.warm_up()
    # llama-cpp-python reads a new prompt in one batch but replays a cached one's last token alone;
    # the tiny difference in the logits can flip a near-tie, so the compared calls all come after one.
    llm.chat([Message(**m) for m in STORY], GenerationOptions(max_tokens=4))
    docs = MemorySource("docs", "agentkit documentation")
    docs.add([Passage("install#0", "Install agentkit with pip install -e . from a checkout.", "Install")])
    with ServerThread(create_app(Agent(llm, [docs]))) as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key="-", max_retries=0, timeout=120)


def raw(client: openai.OpenAI, **fields: Any) -> Any:
    return client.chat.completions.create(model="agentkit/raw", messages=STORY, max_tokens=24, **fields)  # type: ignore[arg-type]


@pytest.mark.real_model
def test_top_p_and_top_k_are_applied_to_the_bare_model(client: openai.OpenAI) -> None:
    greedy = raw(client, temperature=0).choices[0].message.content
    hot = [raw(client, temperature=1.5, seed=seed).choices[0].message.content for seed in (1, 2)]
    assert any(text != greedy for text in hot)  # without them, hot sampling leaves the greedy path
    narrowed = [
        raw(client, temperature=1.0, seed=seed, top_p=0.1, extra_body={"top_k": 1}) for seed in (1, 2)
    ]
    assert [c.choices[0].message.content for c in narrowed] == [greedy, greedy]
    assert all(c.model_extra.get("agentkit") is None for c in narrowed)  # nothing ignored, nothing to say


@pytest.mark.real_model
@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("top_p", 1.5, "top_p must be between 0 and 1, got 1.5"),
        ("top_k", -1, "top_k must be between 0 and 1000000"),
        ("top_k", 0.5, "top_k must be an integer"),
        ("min_p", 2, "min_p must be between 0 and 1"),
        ("presence_penalty", 3, "presence_penalty must be between -2 and 2"),
        ("frequency_penalty", "high", "frequency_penalty must be a number"),
    ],
)
def test_an_out_of_range_sampling_field_is_refused_naming_it(
    client: openai.OpenAI, field: str, value: Any, says: str
) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as err:
        raw(client, extra_body={field: value})
    assert err.value.body["param"] == field and says in err.value.body["message"]  # type: ignore[index]


@pytest.mark.real_model
def test_a_field_the_bare_model_cannot_apply_is_named_in_a_warning(client: openai.OpenAI) -> None:
    completion = raw(client, logit_bias={"1": 5}, presence_penalty=0.5)
    [note] = completion.model_extra["agentkit"]["warnings"]  # type: ignore[index]
    assert note.startswith("ignored logit_bias:") and "'agentkit/raw'" in note and "presence_penalty" in note
    for include_usage in (False, True):
        chunks = list(raw(client, logit_bias={"1": 5}, stream=True, stream_options={"include_usage": include_usage}))
        assert chunks[-1].model_extra["agentkit"]["warnings"] == [note]  # on the very last chunk, as the agent's
        assert all("agentkit" not in c.model_extra for c in chunks[:-1])
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    unbiased = raw(client, logit_bias={})  # the neutral value is not worth a warning
    assert unbiased.model_extra.get("agentkit") is None
