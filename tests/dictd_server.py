"""Test helpers for the dictionary source: a real dictd on a free 127.0.0.1 port with its own
config, and scripted fake DICT servers for the timeout and wire-format cases.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

DICT_DIR = Path("/usr/share/dictd")
APT_HINT = "apt-get install dictd dict-wn dict-gcide dict-foldoc (or `make install` as root)"


def dictd_binary() -> str | None:
    return shutil.which("dictd") or next((p for p in ("/usr/sbin/dictd",) if os.access(p, os.X_OK)), None)


def missing_reason(databases: tuple[str, ...] = ("wn", "gcide", "foldoc")) -> str | None:
    """Why the dictd tests cannot run here, or None."""
    if dictd_binary() is None:
        return f"dictd is not installed; {APT_HINT}"
    missing = [db for db in databases if not (DICT_DIR / f"{db}.index").is_file()]
    if missing:
        return f"dictd databases {', '.join(missing)} are not in {DICT_DIR}; {APT_HINT}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DictdServer:
    """dictd serving `databases` from /usr/share/dictd on 127.0.0.1:`port`, in the foreground."""

    def __init__(self, databases: tuple[str, ...] = ("wn", "gcide", "foldoc")) -> None:
        self.databases = databases
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        # dictd started as root drops to the `dictd` user before writing its pid file.
        self.dir = Path(tempfile.mkdtemp(prefix="agentkit-dictd-"))
        os.chmod(self.dir, 0o777)
        self.conf = self.dir / "dictd.conf"
        dbs = "\n".join(
            f'database {db} {{ data "{DICT_DIR / (db + ".dict.dz")}" index "{DICT_DIR / (db + ".index")}" }}'
            for db in databases
        )
        self.conf.write_text(
            "global {\n  listen_to 127.0.0.1\n}\n"
            "access {\n  allow 127.0.0.1\n  allow localhost\n}\n" + dbs + "\n",
            encoding="utf-8",
        )
        os.chmod(self.conf, 0o644)

    @property
    def url(self) -> str:
        return f"dict://{self.host}:{self.port}"

    def start(self, wait: float = 15.0) -> DictdServer:
        binary = dictd_binary()
        assert binary, missing_reason()
        last = ""
        for _ in range(3):  # another process may take the free port between probe and bind
            self.port = free_port()
            with open(self.dir / "dictd.out", "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "-c", str(self.conf), "-p", str(self.port), "--listen-to", "127.0.0.1",
                     "--pid-file", str(self.dir / "dictd.pid"), "-d", "nodetach"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                )
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection((self.host, self.port), timeout=1) as s:
                        if s.recv(3) == b"220":
                            return self
                except OSError:
                    time.sleep(0.03)
            last = (self.dir / "dictd.out").read_text(errors="replace")[-2000:]
            self.stop()
        raise RuntimeError(f"dictd did not start on 127.0.0.1 (config {self.conf}):\n{last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class FakeDictServer:
    """A one-thread TCP server on 127.0.0.1 that answers each connection with `script(conn)`.

    For cases a real dictd never produces: silence, odd dot-stuffing, dropped connections.
    """

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.script(conn)
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self._conns:
            c.close()
        self.sock.close()


def read_command(conn: socket.socket) -> str:
    """One CRLF-terminated command from a client ('' when it hung up)."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            return ""
        buf += chunk
    return buf.decode().strip()


def greet(conn: socket.socket) -> None:
    """The banner and the answer to the client's CLIENT command."""
    conn.sendall(b"220 fake.example dictd <auth> <1.2@fake>\r\n")
    read_command(conn)
    conn.sendall(b"250 ok\r\n")
