"""A client for the DICT protocol (RFC 2229): DEFINE, MATCH, SHOW DB, SHOW STRAT over one TCP
connection, with dot-stuffed multi-line responses, status codes mapped to errors, and timeouts.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from agentkit.errors import KnowledgeSourceError, SourceUnavailable

DEFAULT_PORT = 2628
_QUICKACK = getattr(socket, "TCP_QUICKACK", 0)

#: The strategies every RFC 2229 server supports, plus dictd's most useful extras.
STRATEGIES = ("exact", "prefix", "lev", "substring", "suffix", "soundex", "re", "regexp", "word")


@dataclass(frozen=True)
class Definition:
    """One definition as a server (or a local dictd database, or a glossary) returns it.

    `text` is the entry as stored: for dictd databases it starts with the headword line.
    """

    word: str
    db: str
    db_description: str
    text: str


class DictProtocolError(KnowledgeSourceError):
    """The server answered with an error status; `code` and `text` are what it said."""

    def __init__(self, message: str, code: int = 0, text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.text = text


# What each error status means for the caller, beyond the server's own text.
_ERROR_HINTS = {
    500: "syntax error, command not recognized",
    501: "syntax error in the parameters",
    502: "command not implemented by this server",
    503: "command parameter not implemented by this server",
    530: "access denied; the server's access section does not allow this client",
    531: "access denied; use SHOW INFO for server information",
    532: "access denied, unknown mechanism",
    550: "invalid database; list the server's databases with DictClient.show_db()",
    551: "invalid strategy; list the server's strategies with DictClient.show_strat()",
}


def quote(word: str) -> str:
    """A word as a DICT command argument: quoted when it holds spaces, quotes or backslashes.

    Control characters (a CR LF would end the command early) become spaces.
    """
    word = "".join(c if c.isprintable() else " " for c in word)
    if word and not any(c in word for c in ' "\\\''):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_args(line: str) -> list[str]:
    """Split a response line into atoms and quoted strings (RFC 2229 section 2.2)."""
    out: list[str] = []
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if c in " \t":
            i += 1
            continue
        if c in "\"'":
            quote_char, i, buf = c, i + 1, []
            while i < n and line[i] != quote_char:
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(line[i])
                i += 1
            out.append("".join(buf))
            i += 1
        else:
            j = i
            while j < n and line[j] not in " \t":
                j += 1
            out.append(line[i:j])
            i = j
    return out


def parse_server(server: str) -> tuple[str, int]:
    """`dict://host:port`, `host:port`, `host` or `[::1]:2628` as (host, port)."""
    s = server.strip()
    s = s.removeprefix("dict://")
    s = s.split("/", 1)[0]
    if "@" in s:  # dict://user;auth@host: the credentials are not used
        s = s.rsplit("@", 1)[1]
    if not s:
        raise ValueError(f"no host in DICT server address {server!r}; write it as dict://host:port")
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, ""
    if port and not port.isdigit():
        raise ValueError(f"bad port {port!r} in DICT server address {server!r}; write it as dict://host:2628")
    return host, int(port) if port else DEFAULT_PORT


class DictClient:
    """One connection to a DICT server, opened on first use and re-opened if the server drops it.

    Every command is bounded by `timeout` seconds in total, not per read. Thread-safe: commands
    on one client are serialized.
    """

    def __init__(self, host: str, port: int = DEFAULT_PORT, timeout: float = 5.0, client_name: str = "agentkit") -> None:
        self.host = host
        self.port = int(port)
        self.timeout = float(timeout)
        self.client_name = client_name
        self.banner = ""
        self._sock: socket.socket | None = None
        self._buf = b""
        self._lock = threading.RLock()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # --- connection ------------------------------------------------------------------------

    def connect(self) -> DictClient:
        """Open the connection and read the 220 banner (a no-op when already connected)."""
        with self._lock:
            if self._sock is None:
                self._open()
            return self

    def _open(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            raise self._unavailable(f"no answer within {self.timeout:g} s while connecting") from None
        except OSError as exc:
            raise self._unavailable(f"cannot connect ({exc.strerror or exc})") from None
        self._buf = b""
        try:
            code, text = self._status(deadline)
            if code != 220:
                self._raise_for(code, text, "connect")
            self.banner = text
            # CLIENT is informational; an old server that lacks it still serves definitions.
            self._send(f"CLIENT {quote(self.client_name)}")
            self._status(deadline)
        except TimeoutError:
            self._drop()
            raise self._unavailable(f"connected, but no 220 banner within {self.timeout:g} s") from None
        except OSError as exc:
            self._drop()
            raise self._unavailable(f"the connection failed while greeting ({exc})") from None
        except BaseException:
            self._drop()
            raise

    def close(self) -> None:
        """Send QUIT and close; safe to call twice."""
        with self._lock:
            if self._sock is None:
                return
            try:
                self._send("QUIT")
                self._status(time.monotonic() + min(self.timeout, 1.0))
            except (OSError, KnowledgeSourceError):
                pass
            finally:
                self._drop()

    quit = close

    def __enter__(self) -> DictClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = b""

    def _unavailable(self, why: str) -> SourceUnavailable:
        return SourceUnavailable(
            f"DICT server {self.address}: {why}; start dictd there (Debian: apt-get install dictd "
            f"dict-wn, then dictd -c CONF -p {self.port}) or fix the dictionary source's `server` setting"
        )

    # --- wire ------------------------------------------------------------------------------

    def _send(self, command: str) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(command.encode("utf-8") + b"\r\n")
        except TimeoutError:
            raise self._unavailable(f"timed out after {self.timeout:g} s sending {command.split()[0]}") from None

    def _readline(self, deadline: float) -> str:
        assert self._sock is not None
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError()
            self._sock.settimeout(remaining)
            if _QUICKACK:
                # dictd writes a response in pieces; with Nagle on its side and delayed ACKs on
                # ours, every multi-line answer would wait 40 ms for our ACK.
                self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", errors="replace")

    def _status(self, deadline: float) -> tuple[int, str]:
        line = self._readline(deadline)
        code, _, text = line.partition(" ")
        if len(code) != 3 or not code.isdigit():
            raise DictProtocolError(f"DICT server {self.address}: not a status line: {line[:200]!r}")
        return int(code), text

    def _text_block(self, deadline: float) -> list[str]:
        """A multi-line text response: up to the lone '.', with dot-stuffing undone."""
        lines: list[str] = []
        while True:
            line = self._readline(deadline)
            if line == ".":
                return lines
            lines.append(line[1:] if line.startswith("..") else line)

    def _raise_for(self, code: int, text: str, command: str) -> None:
        if code in (420, 421):
            raise self._unavailable(f"{code} {text}")
        hint = _ERROR_HINTS.get(code, "unexpected status")
        raise DictProtocolError(f"DICT server {self.address}: {command}: {code} {text} ({hint})", code, text)

    def _command(self, command: str, handler: Any) -> Any:
        """Send `command` and hand the open response to `handler(code, text, deadline)`.

        A connection the server closed while idle is re-opened once; a timeout drops the
        connection (its state is unknown) and raises SourceUnavailable.
        """
        verb = " ".join(command.split()[:2]) if command.startswith("SHOW") else command.split()[0]
        with self._lock:
            for attempt in (0, 1):
                fresh = self._sock is None
                if fresh:
                    self._open()
                deadline = time.monotonic() + self.timeout
                try:
                    self._send(command)
                    code, text = self._status(deadline)
                    return handler(code, text, deadline)
                except TimeoutError:
                    self._drop()
                    raise self._unavailable(f"no answer to {verb} within {self.timeout:g} s") from None
                except (ConnectionError, BrokenPipeError) as exc:
                    self._drop()
                    if fresh or attempt:
                        raise self._unavailable(f"connection lost during {verb} ({exc})") from None
                except OSError as exc:
                    self._drop()
                    raise self._unavailable(f"{verb} failed ({exc})") from None
        raise AssertionError("unreachable")

    # --- commands --------------------------------------------------------------------------

    def define(self, word: str, db: str = "*") -> list[Definition]:
        """Every definition of `word` in `db` ("*" all, "!" the first that has it); [] on 552."""

        def handle(code: int, text: str, deadline: float) -> list[Definition]:
            if code == 552:
                return []
            if code != 150:
                self._raise_for(code, text, f"DEFINE {db} {word}")
            out: list[Definition] = []
            while True:
                code, text = self._status(deadline)
                if code == 250:
                    return out
                if code != 151:
                    self._raise_for(code, text, f"DEFINE {db} {word}")
                args = split_args(text)
                body = self._text_block(deadline)
                head = args[0] if args else word
                out.append(Definition(head, args[1] if len(args) > 1 else db,
                                      args[2] if len(args) > 2 else "", "\n".join(body)))

        return self._command(f"DEFINE {quote(db)} {quote(word)}", handle)

    def match(self, word: str, strategy: str = "exact", db: str = "*") -> list[tuple[str, str]]:
        """(db, headword) pairs matching `word` under `strategy`; [] on 552."""

        def handle(code: int, text: str, deadline: float) -> list[tuple[str, str]]:
            if code == 552:
                return []
            if code != 152:
                self._raise_for(code, text, f"MATCH {db} {strategy} {word}")
            pairs = []
            for line in self._text_block(deadline):
                args = split_args(line)
                if len(args) >= 2:
                    pairs.append((args[0], args[1]))
            self._expect_250(deadline, "MATCH")
            return pairs

        return self._command(f"MATCH {quote(db)} {quote(strategy)} {quote(word)}", handle)

    def health(self) -> dict[str, str]:
        """Connect (if not yet) and list the databases: SourceUnavailable when the server cannot
        be reached or does not answer, so a status report never calls a dead server fine."""
        return self.show_db()

    def show_db(self) -> dict[str, str]:
        """Database name -> description, in the server's order."""
        return self._show("SHOW DB", 110, 554)

    def show_strat(self) -> dict[str, str]:
        """Strategy name -> description."""
        return self._show("SHOW STRAT", 111, 555)

    def show_info(self, db: str) -> str:
        """The server's information text about `db` (its source, licence, ...)."""

        def handle(code: int, text: str, deadline: float) -> str:
            if code != 112:
                self._raise_for(code, text, f"SHOW INFO {db}")
            body = self._text_block(deadline)
            self._expect_250(deadline, "SHOW INFO")
            return "\n".join(body)

        return self._command(f"SHOW INFO {quote(db)}", handle)

    def _show(self, command: str, ok: int, empty: int) -> dict[str, str]:
        def handle(code: int, text: str, deadline: float) -> dict[str, str]:
            if code == empty:
                return {}
            if code != ok:
                self._raise_for(code, text, command)
            items = {}
            for line in self._text_block(deadline):
                args = split_args(line)
                if args:
                    items[args[0]] = args[1] if len(args) > 1 else ""
            self._expect_250(deadline, command)
            return items

        return self._command(command, handle)

    def _expect_250(self, deadline: float, command: str) -> None:
        code, text = self._status(deadline)
        if code != 250:
            self._raise_for(code, text, command)
