"""The dictionary source: the DICT client against a real dictd on 127.0.0.1, the dictd file
reader, glossaries, headword extraction and senses, and WordNet glosses of the routing set.
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest
import yaml
from dictd_server import DICT_DIR, DictdServer, FakeDictServer, free_port, greet, missing_reason, read_command
from test_definitions import PHRASINGS, WHAT_IS_PHRASINGS

from agentkit.contracts import KnowledgeSourceContract
from agentkit.errors import ConfigError, SourceUnavailable
from agentkit.knowledge.base import KnowledgeSource
from agentkit.knowledge.dict_protocol import DictClient, DictProtocolError, parse_server, quote, split_args
from agentkit.knowledge.dictd_files import DictdFiles, DictZip, b64_number, lev1_variants
from agentkit.knowledge.dictionary import (
    DictionarySource,
    DictionarySourceConfig,
    extract_headword,
    extract_headwords,
    split_senses,
)
from agentkit.knowledge.glossary import Glossary, within_one_edit
from agentkit.reasoning.definitions import definition_answer
from agentkit.routing.simple import SimpleRouter

ROOT = Path(__file__).resolve().parents[1]
ROUTING_DEV = ROOT.parent / "shared" / "data" / "routing" / "dev.jsonl"

needs_dictd = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")
needs_wn = pytest.mark.skipif(
    not (DICT_DIR / "wn.index").is_file(), reason="WordNet dictd files are missing; apt-get install dict-wn"
)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dictd():
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = DictdServer(("wn", "gcide", "foldoc")).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def client(dictd: DictdServer):
    c = DictClient(dictd.host, dictd.port, timeout=5)
    yield c
    c.close()


@pytest.fixture(scope="module")
def wn() -> DictdFiles:
    if not (DICT_DIR / "wn.index").is_file():
        pytest.skip("WordNet dictd files are missing; apt-get install dict-wn")
    return DictdFiles(DICT_DIR / "wn.index")


@pytest.fixture(scope="module")
def wn_source(wn: DictdFiles) -> DictionarySource:
    return DictionarySource("wordnet", files=[wn])


@pytest.fixture()
def glossary_csv(tmp_path: Path) -> Path:
    path = tmp_path / "team-terms.csv"
    path.write_text(
        "term,definition\n"
        "RAG,Retrieval-augmented generation: answering from retrieved passages.\n"
        "Knowledge Source,Anything agentkit can search for passages.\n"
        "router,Decides which knowledge a question needs.\n"
        "router,A network device that forwards packets.\n"
        '"dot, stuffing","Doubling a leading dot, as in RFC 2229."\n',
        encoding="utf-8",
    )
    return path


# --- the DICT protocol, against dictd ---------------------------------------------------------


@needs_dictd
class TestDictClient:
    def test_show_db_lists_the_databases(self, client: DictClient) -> None:
        dbs = client.show_db()
        assert {"wn", "gcide", "foldoc"} <= set(dbs)
        assert "WordNet" in dbs["wn"]
        assert client.banner  # the 220 greeting was read

    def test_show_strat(self, client: DictClient) -> None:
        assert {"exact", "prefix", "lev"} <= set(client.show_strat())

    def test_define_returns_wordnet_senses(self, client: DictClient) -> None:
        (d,) = client.define("serendipity", "wn")
        assert (d.word, d.db) == ("serendipity", "wn")
        assert "WordNet" in d.db_description
        assert "good luck in making unexpected and fortunate discoveries" in d.text
        found = client.define("lugubrious")  # "*": every database that has it
        assert {d.db for d in found} == {"wn", "gcide"}
        assert "excessively mournful" in next(d.text for d in found if d.db == "wn")

    def test_multiword_headwords_are_quoted(self, client: DictClient) -> None:
        (d,) = client.define("ice cream", "wn")
        assert "frozen dessert" in d.text
        assert client.define("o'clock", "wn")[0].word == "o'clock"
        assert client.define("serendipity\r\nSHOW DB", "wn") == []  # no command injection

    def test_no_match_is_empty(self, client: DictClient) -> None:
        assert client.define("zzxqvbnonword") == []
        assert client.match("zzxqvbnonword", "lev") == []

    def test_match_strategies(self, client: DictClient) -> None:
        assert client.match("serendipity", "exact", "wn") == [("wn", "serendipity")]
        assert set(client.match("serendip", "prefix", "wn")) == {("wn", "serendipitous"), ("wn", "serendipity")}
        assert ("wn", "serendipity") in client.match("serendipty", "lev")

    def test_errors_carry_the_status_and_the_server_text(self, client: DictClient) -> None:
        with pytest.raises(DictProtocolError) as err:
            client.define("word", "nosuchdb")
        assert err.value.code == 550 and "invalid database" in str(err.value) and "show_db" in str(err.value)
        with pytest.raises(DictProtocolError) as err:
            client.match("word", "nosuchstrategy")
        assert err.value.code == 551
        assert client.define("serendipity", "wn")  # the connection is still usable

    def test_reconnects_after_close(self, dictd: DictdServer) -> None:
        with DictClient(dictd.host, dictd.port) as c:
            assert c.define("serendipity", "wn")
            c.close()
            assert c.define("serendipity", "wn")


def test_connection_refused_names_the_address() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(SourceUnavailable, match=rf"127\.0\.0\.1:{port}.*dictd"):
        DictClient("127.0.0.1", port, timeout=2).define("word")


def test_a_silent_server_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # the kernel completes the handshake; nobody ever speaks
    port = silent.getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match=rf"127\.0\.0\.1:{port}: connected, but no 220 banner within 0.3 s"):
            DictClient("127.0.0.1", port, timeout=0.3).define("word")
        assert time.monotonic() - started < 2
    finally:
        silent.close()


def test_a_server_that_stops_answering_times_out() -> None:
    def script(conn: socket.socket) -> None:
        greet(conn)
        read_command(conn)  # DEFINE ... and then nothing
        time.sleep(3)

    server = FakeDictServer(script)
    try:
        started = time.monotonic()
        with pytest.raises(SourceUnavailable, match="no answer to DEFINE within 0.3 s"):
            DictClient("127.0.0.1", server.port, timeout=0.3).define("word")
        assert time.monotonic() - started < 2
    finally:
        server.close()


def test_dot_stuffing_and_multi_line_answers() -> None:
    def script(conn: socket.socket) -> None:
        greet(conn)
        assert read_command(conn) == 'DEFINE * "dot word"'
        conn.sendall(
            b"150 2 definitions retrieved\r\n"
            b'151 "dot word" test "A \\"test\\" db"\r\n'
            b"dot word\r\n..leading dot\r\n...\r\n\r\nlast\r\n.\r\n"
            b'151 "dot word" other "Other"\r\nsecond\r\n.\r\n'
            b"250 ok\r\n"
        )
        assert read_command(conn) == "SHOW DB"
        conn.sendall(b"554 no databases present\r\n")
        assert read_command(conn) == "QUIT"
        conn.sendall(b"221 bye\r\n")

    server = FakeDictServer(script)
    try:
        with DictClient("127.0.0.1", server.port, timeout=2) as c:
            first, second = c.define("dot word")
            assert first.text == "dot word\n.leading dot\n..\n\nlast"
            assert (first.db, first.db_description) == ("test", 'A "test" db')
            assert (second.db, second.text) == ("other", "second")
            assert c.show_db() == {}
    finally:
        server.close()


def test_reconnects_when_the_server_drops_an_idle_connection() -> None:
    connections = []

    def script(conn: socket.socket) -> None:
        connections.append(conn)
        greet(conn)
        read_command(conn)
        conn.sendall(b"552 no match\r\n")
        conn.close()  # as dictd does after its idle timeout

    server = FakeDictServer(script)
    try:
        c = DictClient("127.0.0.1", server.port, timeout=2)
        assert c.define("a") == [] and c.define("b") == []
        assert len(connections) == 2
    finally:
        server.close()


def test_wire_helpers() -> None:
    assert quote("word") == "word"
    assert quote("ice cream") == '"ice cream"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert split_args('"ice cream" wn "WordNet (r) 3.0"') == ["ice cream", "wn", "WordNet (r) 3.0"]
    assert split_args(r'wn "a \"quoted\" word"') == ["wn", 'a "quoted" word']
    assert parse_server("dict://127.0.0.1:2700") == ("127.0.0.1", 2700)
    assert parse_server("dict.example.org") == ("dict.example.org", 2628)
    assert parse_server("localhost:26280") == ("localhost", 26280)
    with pytest.raises(ValueError, match="port"):
        parse_server("host:port")


# --- dictd files -------------------------------------------------------------------------------


@needs_dictd
@pytest.mark.parametrize("word", ["serendipity", "lugubrious", "lambaste", "bank", "ice cream"])
def test_files_and_server_give_the_same_senses(wn: DictdFiles, client: DictClient, word: str) -> None:
    (from_server,) = client.define(word, "wn")
    (from_files,) = wn.define(word)
    assert from_files.text == from_server.text
    assert split_senses(from_files) == split_senses(from_server)
    assert wn.description == from_server.db_description


@needs_dictd
def test_file_matching_agrees_with_dictd(wn: DictdFiles, client: DictClient) -> None:
    for word, strategy in [("serendip", "prefix"), ("serendipty", "lev"), ("lugubrius", "lev"), ("bank", "lev")]:
        assert {w.casefold() for _, w in wn.match(word, strategy)} == {
            w.casefold() for _, w in client.match(word, strategy, "wn")
        }, (word, strategy)


@needs_wn
def test_file_lookup_is_case_insensitive(wn: DictdFiles) -> None:
    assert wn.name == "wn" and wn.description == "WordNet (r) 3.0 (2006)"
    assert [d.word for d in wn.define("SERENDIPITY")] == ["serendipity"]
    assert wn.match("Serendipty", "lev") == [("wn", "serendipity")]
    assert wn.define("00-database-short") == []  # metadata entries stay hidden, as in dictd
    assert wn.define("zzxqvbnonword") == []


@needs_dictd
def test_dictzip_random_access_late_in_the_file(wn: DictdFiles, client: DictClient) -> None:
    lines = (DICT_DIR / "wn.index").read_text(encoding="utf-8").splitlines()
    head, off, length = max((ln.split("\t") for ln in lines), key=lambda p: b64_number(p[1]))
    dz = DictZip(DICT_DIR / "wn.dict.dz")
    text = dz.read(b64_number(off), b64_number(length)).decode("utf-8")
    assert len(dz._cache) <= 2  # only the chunks holding the entry were inflated
    assert b64_number(off) > 0.99 * dz.chunk_length * (len(dz.chunk_offsets) - 1)
    (from_server,) = client.define(head, "wn")
    assert text.rstrip("\n") == from_server.text


def _dictzip(data: bytes, chunk: int) -> bytes:
    """A dictzip file as dictzip(1) writes it: chunks flushed separately, sizes in FEXTRA 'RA'."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pieces = [comp.compress(data[i:i + chunk]) + comp.flush(zlib.Z_FULL_FLUSH) for i in range(0, len(data), chunk)]
    pieces[-1] += comp.flush(zlib.Z_FINISH)
    ra = struct.pack(f"<HHH{len(pieces)}H", 1, chunk, len(pieces), *map(len, pieces))
    extra = b"RA" + struct.pack("<H", len(ra)) + ra
    header = b"\x1f\x8b\x08\x04" + b"\0" * 4 + b"\x00\x03" + struct.pack("<H", len(extra)) + extra
    trailer = struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return header + b"".join(pieces) + trailer


def _tiny_database(tmp_path: Path, compress: str) -> Path:
    entries = {
        "00-database-short": "00-database-short\n     A tiny test dictionary\n",
        "apple": "apple\n   1. A fruit.\n\n   2. A company.\n      [PJC]\n",
        "apply": "apply\n   To put to use.\n",
        "zebra": "zebra\n   A striped horse. " + "Long text. " * 40 + "\n",
    }
    data, index = b"", []
    for word in sorted(entries):
        body = entries[word].encode()
        index.append(f"{word}\t{_b64(len(data))}\t{_b64(len(body))}")
        data += body
    (tmp_path / "tiny.index").write_text("\n".join(index) + "\n", encoding="utf-8")
    if compress == "dictzip":
        (tmp_path / "tiny.dict.dz").write_bytes(_dictzip(data, chunk=64))
    elif compress == "gzip":
        (tmp_path / "tiny.dict.dz").write_bytes(gzip.compress(data))
    else:
        (tmp_path / "tiny.dict").write_bytes(data)
    return tmp_path / "tiny"


def _b64(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    out = ""
    while True:
        out = alphabet[n % 64] + out
        n //= 64
        if not n:
            return out


@pytest.mark.parametrize("compress", ["dictzip", "gzip", "plain"])
def test_tiny_database_in_every_storage_format(tmp_path: Path, compress: str) -> None:
    db = DictdFiles(_tiny_database(tmp_path, compress))
    assert (db.name, db.description) == ("tiny", "A tiny test dictionary")
    (zebra,) = db.define("Zebra")  # spans several 64-byte chunks
    assert zebra.text.startswith("zebra\n   A striped horse.") and zebra.text.rstrip().endswith("Long text.")
    (apple,) = db.define("apple")
    assert [s.text for s in split_senses(apple)] == ["A fruit.", "A company."]
    assert db.match("app", "prefix") == [("tiny", "apple"), ("tiny", "apply")]
    assert db.match("appel", "lev") == [("tiny", "apple")]
    assert db.match("00-database", "prefix") == []


def test_missing_database_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable, match="apt-get install dict-wn"):
        DictdFiles(tmp_path / "nothere")


def test_lev_neighbourhood() -> None:
    assert {"ab", "bc", "abcx", "xbc", "abx"} <= lev1_variants("abc", "abcx")
    assert "bac" in lev1_variants("abc", "abc")  # transposition
    assert "abc" not in lev1_variants("abc", "abc")


# --- glossaries --------------------------------------------------------------------------------


def test_csv_glossary(glossary_csv: Path) -> None:
    g = Glossary(glossary_csv)
    assert g.name == "team-terms" and len(g) == 4
    assert [d.text for d in g.define("ROUTER")] == [
        "Decides which knowledge a question needs.", "A network device that forwards packets.",
    ]
    assert g.define("knowledge   source")[0].word == "Knowledge Source"
    assert g.define("dot, stuffing")[0].text.startswith("Doubling")
    assert g.match("know", "prefix") == [("team-terms", "Knowledge Source")]
    assert g.match("ruoter", "lev") == [("team-terms", "router")]
    assert g.match("knowledge sorce", "fuzzy") == [("team-terms", "Knowledge Source")]
    assert g.define("nothing") == []


def test_yaml_glossaries(tmp_path: Path) -> None:
    mapping = tmp_path / "terms.yaml"
    mapping.write_text("RAG: retrieval-augmented generation\nrouter:\n  - first sense\n  - second sense\n")
    g = Glossary(mapping)
    assert [d.text for d in g.define("rag")] == ["retrieval-augmented generation"]
    assert len(g.define("Router")) == 2
    items = tmp_path / "items.yml"
    items.write_text("- term: Knowledge source\n  definition: Anything agentkit can search.\n")
    assert Glossary(items).define("knowledge source")[0].text == "Anything agentkit can search."


def test_bad_glossaries_say_what_to_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("name_of_thing;text\nx;y\n")
    with pytest.raises(ConfigError, match="term,definition"):
        Glossary(bad)
    items = tmp_path / "bad.yaml"
    items.write_text("- just a string\n")
    with pytest.raises(ConfigError, match="item 1"):
        Glossary(items)
    with pytest.raises(SourceUnavailable, match="does not exist"):
        Glossary(tmp_path / "missing.csv")


def test_within_one_edit() -> None:
    assert within_one_edit("router", "ruoter") and within_one_edit("router", "routr")
    assert within_one_edit("router", "routers") and not within_one_edit("router", "rotuers")


# --- headwords and senses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "headword"),
    [
        ("What does 'serendipity' mean?", "serendipity"),
        ("what does the word “lugubrious” mean", "lugubrious"),
        ("Define the word soldierly.", "soldierly"),
        ("define: zymurgy", "zymurgy"),
        ("Meaning of sapiential?", "sapiential"),
        ("What is the meaning of ice cream?", "ice cream"),
        ("What's the definition of the term 'knowledge source'?", "knowledge source"),
        ("What is a lambaste?", "lambaste"),
        ("What is an entropy", "entropy"),
        ("what is meant by zeitgeist?", "zeitgeist"),
        ("How do you define hubris?", "hubris"),
        ("serendipity?", "serendipity"),
        ("Lugubrious", "Lugubrious"),
        ("petrichor meaning", "petrichor"),
        ("Can you look up ephemeral for me?", "ephemeral"),
    ],
)
def test_headword_extraction(question: str, headword: str) -> None:
    assert extract_headword(question) == headword


@pytest.mark.parametrize("template", PHRASINGS + WHAT_IS_PHRASINGS)
def test_headword_extraction_in_any_phrasing(template: str) -> None:
    assert extract_headword(template.format(w="crepuscule")) == "crepuscule"
    assert extract_headword(template.format(w="ice cream")) == "ice cream"


@pytest.mark.parametrize("question", ["what does the report say about sales?", "explain how tides work",
                                      "Life has no meaning.", "What does this error mean?", "what does it mean?"])
def test_headword_extraction_declines_other_questions(question: str) -> None:
    assert extract_headwords(question) == []


def test_headword_extraction_declines_long_questions() -> None:
    assert extract_headwords("How do I re-ingest a changed file into the store?") == []
    assert extract_headwords("") == [] and extract_headwords("  ?! ") == []
    assert extract_headwords("What is a lambaste?") == ["lambaste", "a lambaste"]
    assert extract_headwords("a cappella") == ["a cappella", "cappella"]


@needs_wn
def test_sense_rules(wn: DictdFiles) -> None:
    (established,) = wn.define("established")
    senses = split_senses(established)
    assert len(senses) == 5 and {s.pos for s in senses} == {"adj"}
    assert senses[0].text.startswith("brought about or set up or accepted; especially long established;")
    assert senses[0].text.endswith("[syn: {established}, {constituted}] [ant: {unestablished}]")
    (finnish,) = wn.define("finnish")
    assert [s.pos for s in split_senses(finnish)] == ["adj", "n"]


def test_gcide_style_senses() -> None:
    from agentkit.knowledge.dict_protocol import Definition

    text = (
        'Bank \\Bank\\ (b[a^][ng]k), n. [OE. banke; akin to E. bench, and\n'
        "   prob. of Scand. origin.]\n"
        "   1. A mound, pile, or ridge of earth; as, a bank of clouds.\n"
        "      [1913 Webster]\n\n"
        "            They cast up a bank against the city. --2 Sam. xx.\n"
        "      [1913 Webster]\n\n"
        "   2. A steep acclivity.\n"
        "      [1913 Webster]\n\n"
        "   {Bank swallow}, a small swallow that nests in a bank.\n"
        "      [1913 Webster]\n"
    )
    senses = split_senses(Definition("Bank", "gcide", "GCIDE", text))
    assert [s.text for s in senses] == ["A mound, pile, or ridge of earth; as, a bank of clouds.", "A steep acclivity."]
    single = 'Lugubrious \\Lu*gu"bri*ous\\, a. [L. lugubris, fr. lugere to\n   mourn.]\n   Mournful; doleful.\n' \
             "   [1913 Webster]\n\n         Crossbones and other lugubrious emblems. --Hawthorne.\n" \
             '   -- {Lu*gu"bri*ous*ly}, adv.\n   [1913 Webster]\n'
    assert [s.text for s in split_senses(Definition("Lugubrious", "gcide", "GCIDE", single))] == ["Mournful; doleful."]


# --- the source --------------------------------------------------------------------------------


@needs_dictd
def test_source_over_a_server(dictd: DictdServer) -> None:
    src = DictionarySource("dict", server=dictd.url, databases=["wn", "gcide"])
    try:
        found = src.search("What does lugubrious mean?", k=5)
        assert [p.id for p in found] == ["wn:lugubrious:1", "gcide:lugubrious:1"]
        first = found[0]
        assert first.uri == f"dict://127.0.0.1:{dictd.port}/wn/lugubrious"
        assert first.text == "excessively mournful" and first.title == "lugubrious (wn)"
        assert first.metadata["db"] == "wn" and first.metadata["sense"] == 1 and first.metadata["pos"] == "adj"
        assert first.source == "dict" and found[0].score > found[1].score
        only_gcide = src.search("define lugubrious", filters={"db": "gcide"})
        assert [p.metadata["db"] for p in only_gcide] == ["gcide"]
        assert src.search("define lugubrious", filters={"db": "nosuch"}) == []
        with DictionarySource("all", server=dictd.url) as every:  # databases "*"
            assert every.search("define lugubrious", filters={"db": "nosuch"}) == []
            assert {p.metadata["db"] for p in every.search("define lisp", k=20)} == {"wn", "gcide", "foldoc"}
        fixed = src.search("define serendipty")
        assert [p.id for p in fixed] == ["wn:serendipity:1"] and fixed[0].metadata["corrected_from"] == "serendipty"
    finally:
        src.close()


@needs_dictd
def test_a_phrased_question_is_answered_from_wordnet_over_a_server(dictd: DictdServer) -> None:
    question = "what does crepuscule mean in everyday language?"
    with DictionarySource("dict", server=dictd.url, databases=["gcide", "wn"]) as src:
        evidence = src.search(question, k=8)
    wn = [p for p in evidence if p.metadata["db"] == "wn"]
    assert wn and wn[0].id == "wn:crepuscule:1" and wn[0].metadata["headword"] == "crepuscule"
    assert wn[0].text.startswith("the time of day immediately following sunset;")
    answer = definition_answer(question, evidence)
    assert answer is not None
    (cited,) = answer.citations  # WordNet has one sense; GCIDE's comes first but WordNet is preferred
    assert cited.passage.id == "wn:crepuscule:1" and evidence[cited.marker - 1] is cited.passage
    assert cited.quote == "the time of day immediately following sunset"
    assert cited.passage.text[cited.start : cited.end] == cited.quote
    assert f"“{cited.quote}” [{cited.marker}]" in answer.text


@needs_dictd
def test_a_database_served_twice_is_answered_once(dictd: DictdServer, wn: DictdFiles) -> None:
    src = DictionarySource("dict", server=dictd.url, files=[wn], databases=["wn"])
    try:
        found = src.search("define lambaste", k=10)
        assert [p.id for p in found] == ["wn:lambaste:1", "wn:lambaste:2"]
        assert all(p.uri.startswith("file://") for p in found)  # the files come before the server
    finally:
        src.close()


@needs_wn
def test_an_agent_answers_from_the_dictionary(wn_source: DictionarySource) -> None:
    from agentkit import Agent
    from agentkit.testing import FakeLLM

    answer = Agent(FakeLLM(), [wn_source]).ask("What does lugubrious mean?")
    assert answer.route is not None and answer.route.targets == ["wordnet"]
    assert answer.cited_ids == ["wn:lugubrious:1"]
    assert answer.citations[0].passage.uri == "file:///usr/share/dictd/wn.dict.dz#lugubrious"


@needs_wn
def test_source_one_passage_per_sense(wn_source: DictionarySource) -> None:
    found = wn_source.search("Define lambaste", k=5)
    assert [p.id for p in found] == ["wn:lambaste:1", "wn:lambaste:2"]
    assert found[0].text == "beat with a cane [syn: {cane}, {flog}, {lambaste}, {lambast}]"
    assert found[1].text.startswith("censure severely or angrily;")
    assert found[0].uri == "file:///usr/share/dictd/wn.dict.dz#lambaste"
    assert [p.metadata["sense"] for p in found] == [1, 2]
    assert wn_source.search("define bank", k=3)[-1].id == "wn:bank:3"
    assert wn_source.search("What is the meaning of ice cream?")[0].id == "wn:ice_cream:1"


@needs_wn
def test_source_corrects_misspellings_and_plurals(wn_source: DictionarySource) -> None:
    (p,) = wn_source.search("What does serendipty mean?")
    assert p.id == "wn:serendipity:1" and p.metadata["corrected_from"] == "serendipty"
    assert wn_source.search("what are prions")[0].metadata == {
        **wn_source.search("what are prions")[0].metadata, "headword": "prion", "corrected_from": "prions",
    }
    assert wn_source.search("define zzxqvbnonword") == []


@needs_wn
def test_source_is_routed_definitional_questions(wn_source: DictionarySource) -> None:
    assert wn_source.kind == "dictionary"
    assert isinstance(wn_source, KnowledgeSource)
    decision = SimpleRouter().decide("What does serendipity mean?", {"wordnet": wn_source})
    assert decision.targets == ["wordnet"]
    assert wn_source.search("") == [] and wn_source.search("define bank", k=0) == []


@needs_wn
def test_source_with_a_glossary_first(wn: DictdFiles, glossary_csv: Path) -> None:
    src = DictionarySource("terms", files=[wn], glossaries=[glossary_csv])
    found = src.search("What does 'router' mean?", k=10)
    assert [p.metadata["db"] for p in found[:2]] == ["team-terms", "team-terms"]
    assert found[0].uri == f"glossary://{glossary_csv.resolve()}#router"
    assert found[0].id == "team-terms:router:1" and found[2].id == "wn:router:1"
    assert src.search("what is a knowledge source?")[0].text == "Anything agentkit can search for passages."
    assert src.search("define knowledge sorce")[0].metadata["corrected_from"] == "knowledge sorce"


def test_unreachable_server_fails_unless_another_backend_answers(glossary_csv: Path) -> None:
    down = f"127.0.0.1:{free_port()}"
    with pytest.raises(SourceUnavailable, match=down):
        DictionarySource("d", server=down, timeout=1).search("define rag")
    src = DictionarySource("d", server=down, glossaries=[glossary_csv], timeout=1)
    assert src.search("define rag")[0].metadata["db"] == "team-terms"


# --- config ------------------------------------------------------------------------------------


def test_config_model(tmp_path: Path) -> None:
    cfg = DictionarySourceConfig.model_validate({"type": "dictionary", "server": "dict://127.0.0.1:2628"})
    assert cfg.databases == ["*"] and cfg.timeout == 5.0
    with pytest.raises(ValueError, match="servr"):
        DictionarySourceConfig.model_validate({"type": "dictionary", "servr": "x"})
    with pytest.raises(ValueError, match="needs `server`"):
        DictionarySourceConfig.model_validate({"type": "dictionary"})
    with pytest.raises(ValueError, match="bad port"):
        DictionarySourceConfig.model_validate({"type": "dictionary", "server": "host:twenty"})


@needs_wn
def test_example_config_builds_a_working_source() -> None:
    raw = yaml.safe_load((ROOT / "configs" / "dictionary.yaml").read_text())
    spec = raw["sources"]["wordnet"]
    from agentkit.plugins import registry

    if "dictionary" in registry().knowledge_types():
        from agentkit.config import parse_config
        from agentkit.plugins import build_source

        cfg = parse_config((ROOT / "configs" / "dictionary.yaml").read_text(), "configs/dictionary.yaml")
        src = build_source("wordnet", cfg.sources["wordnet"], cfg.data_dir)
    else:  # until plugins.py registers the type
        src = DictionarySource.from_config("wordnet", DictionarySourceConfig.model_validate(spec), None)
    assert src.kind == "dictionary"
    assert src.search("define serendipity")[0].id == "wn:serendipity:1"


# --- the contract every source passes ----------------------------------------------------------


@needs_wn
class TestFilesContract(KnowledgeSourceContract):
    query = "What does serendipity mean?"
    expected_id = "wn:serendipity:1"
    unicode_query = "What does naïve mean?"
    unicode_expected_id = "wn:naive:1"
    long_text_finds_the_answer = False

    @pytest.fixture()
    def source(self, wn_source: DictionarySource) -> DictionarySource:
        return wn_source


@pytest.fixture(scope="module")
def dict_server_source(dictd: DictdServer):
    """One client of the test dictd for the whole contract suite."""
    src = DictionarySource("dict", server=dictd.url, databases=["wn", "gcide"])
    yield src
    src.close()


@needs_dictd
class TestServerContract(KnowledgeSourceContract):
    query = "Define lugubrious"
    expected_id = "wn:lugubrious:1"
    unicode_query = "What does naïve mean?"
    unicode_expected_id = "wn:naive:1"
    long_text_finds_the_answer = False

    @pytest.fixture()
    def source(self, dict_server_source: DictionarySource) -> DictionarySource:
        return dict_server_source


# --- the routing set's dictionary questions ----------------------------------------------------


def _gloss_terms(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", re.sub(r"\[(?:syn|ant|also):[^\]]*\]", " ", text.lower())))


@needs_wn
@pytest.mark.skipif(not ROUTING_DEV.is_file(), reason=f"{ROUTING_DEV} is absent (the shared data checkout)")
def test_routing_dev_glosses(wn_source: DictionarySource) -> None:
    rows = [json.loads(line) for line in ROUTING_DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("route") == "dictionary"]
    assert len(rows) >= 40
    hits, misses = 0, []
    for row in rows:
        assert extract_headword(row["question"]).casefold() == row["word"].casefold(), row["question"]
        found = wn_source.search(row["question"], k=1)
        gold = _gloss_terms(row["gloss"])
        got = _gloss_terms(found[0].text) if found else set()
        if len(gold & got) >= 0.8 * len(gold):
            hits += 1
        else:
            misses.append((row["question"], row["gloss"], found[0].text if found else None))
    assert hits >= 0.9 * len(rows), misses
