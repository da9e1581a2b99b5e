"""agentkit-notes passes agentkit's WritableSourceContract, on disk and in memory, and indexes a notes folder."""

from __future__ import annotations

from pathlib import Path

import agentkit_notes
import pytest
from agentkit_notes.source import NotesSource, fts_query

from agentkit import Agent
from agentkit.config import parse_config
from agentkit.plugins import load_registry
from agentkit.testing import FakeLLM, WritableSourceContract
from agentkit.types import Passage


class TestNotesSourceOnDisk(WritableSourceContract):
    @pytest.fixture()
    def source(self, tmp_path: Path) -> NotesSource:
        return NotesSource("notes", tmp_path / "notes.sqlite")


class TestNotesSourceInMemory(WritableSourceContract):
    @pytest.fixture()
    def source(self) -> NotesSource:
        return NotesSource("notes")


def test_data_survives_reopening(tmp_path: Path) -> None:
    first = NotesSource("notes", tmp_path / "n.sqlite")
    first.add([Passage("a#0", "Sourdough needs a starter fed daily.", "Bread", metadata={"tag": "food"})])
    first.close()
    again = NotesSource("notes", tmp_path / "n.sqlite")
    assert again.count() == 1
    [hit] = again.search("how often to feed the starter", k=3, filters={"tag": "food"})
    assert hit.id == "a#0" and hit.score > 0


def test_title_matches_count_more(tmp_path: Path) -> None:
    source = NotesSource("notes")
    source.add([Passage("body#0", "A note that mentions kayaks once among other words.", "Trip"),
                Passage("title#0", "A note about a trip with other words.", "Kayaks")])
    assert [p.id for p in source.search("kayaks", k=2)] == ["title#0", "body#0"]


def test_query_words_are_never_fts_operators() -> None:
    assert fts_query('NEAR(a b) OR "x" AND NOT y*') == '"near" OR "a" OR "b" OR "or" OR "x" OR "and" OR "not" OR "y"'
    assert fts_query("?? !!") == ""
    source = NotesSource("notes")
    source.add([Passage("n#0", "NOT a problem", "")])
    assert [p.id for p in source.search("NOT AND OR", k=3)] == ["n#0"]


def test_indexes_a_notes_folder_with_stable_ids(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "garden.md").write_text("# Garden\n\nTomatoes need six hours of sun a day.\n", encoding="utf-8")
    source = NotesSource("notes", tmp_path / "n.sqlite", notes_dir=notes)
    [hit] = source.search("how much sun do tomatoes need", k=1)
    assert hit.title == "Garden" and "six hours" in hit.text
    count = source.count()
    source.sync()
    assert source.count() == count
    assert source.search("tomatoes", k=1)[0].id == hit.id


def test_registered_as_sqlite_notes_and_built_from_a_config(tmp_path: Path) -> None:
    registry = load_registry({"notes": agentkit_notes}, entry_points=False)
    assert registry.knowledge("sqlite_notes") is NotesSource
    cfg = parse_config(f"data_dir: {tmp_path}\nllm: {{backend: fake}}\nsources: {{mine: {{type: sqlite_notes}}}}\n")
    cls = registry.knowledge("sqlite_notes")
    source = cls.from_config("mine", cls.config_model.model_validate(cfg.sources["mine"]), cfg.data_dir)
    assert source.path == str(tmp_path / "mine.notes.sqlite")
    source.add([Passage("tides#0", "Tides follow the Moon.", "Tides", uri="note://tides")])
    answer = Agent(FakeLLM(), [source]).ask("What do tides follow?", route=["mine"])
    assert answer.cited_ids == ["tides#0"]
