"""A real HAPI FHIR JPA server (FHIR R4, H2 on disk) for development and tests.

The server is a small Maven module of our own in ``sandbox/hapi`` (HAPI FHIR 8.8.0 on Spring
Boot 3.5, see its ``pom.xml``). This module builds it with Maven (``target/hapi-fhir-sandbox.jar``,
whose manifest puts the dependency jars of ``target/lib`` on the class path) and runs it with
``java -jar`` as a subprocess in its own process group:

    >>> from sandbox.hapi_server import HapiServer, build, free_port
    >>> build()                                          # no-op while the jar is up to date
    >>> with HapiServer(free_port(), Path("/tmp/hapi-data")) as hapi:
    ...     requests.get(f"{hapi.base_url}/Patient")     # base_url: http://127.0.0.1:PORT/fhir

The H2 database lives in ``data_dir`` (``data_dir/h2``): reuse the directory to keep the data
across restarts, give an empty one to start empty. The server log goes to ``log_file`` (default
``data_dir/hapi.log``).

Command line::

    python -m sandbox.hapi_server build [--force]
    python -m sandbox.hapi_server run --port 8090 --data-dir DIR          # foreground, Ctrl-C stops
    python -m sandbox.hapi_server start --port 8090 --data-dir DIR --pid-file F   # detached
    python -m sandbox.hapi_server stop --pid-file F

What the server does and does not do (and the HAPI behaviours a client must know) is described
in ``sandbox/hapi/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import requests

HAPI_DIR: Path = Path(__file__).resolve().parent / "hapi"
"""The Maven module of the server (``sandbox/hapi``)."""

JAR_NAME = "hapi-fhir-sandbox.jar"
LOG_TAIL_LINES = 40
JVM_OPTIONS: tuple[str, ...] = (
    # Startup is what tests wait for: C1-only JIT and the serial GC halve the CPU time to readiness
    # (measured ~30 s instead of ~65 s of CPU on 2 cores), at some cost in peak throughput.
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Dfile.encoding=UTF-8",
    "-Duser.timezone=UTC",
)
_POLL_SECONDS = 0.5


class HapiError(Exception):
    """Building, starting or stopping the HAPI FHIR server failed."""


def jar_path() -> Path:
    """The jar that ``build()`` produces (its dependencies are in ``target/lib``)."""
    return HAPI_DIR / "target" / JAR_NAME


def _source_files() -> list[Path]:
    files = [HAPI_DIR / "pom.xml"]
    files.extend(p for p in (HAPI_DIR / "src").rglob("*") if p.is_file())
    return files


def _jar_is_stale(jar: Path) -> bool:
    if not jar.is_file() or not (jar.parent / "lib").is_dir():
        return True
    jar_mtime = jar.stat().st_mtime
    return any(p.stat().st_mtime > jar_mtime for p in _source_files())


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def build(force: bool = False) -> Path:
    """Build the server jar with Maven unless it is newer than ``pom.xml`` and the sources.

    Runs ``mvn -q -B package -DskipTests`` in ``HAPI_DIR`` (the first build downloads HAPI's
    dependencies into ``~/.m2`` and takes minutes; a warm build about 10 s). Concurrent callers
    (e.g. parallel test workers) are serialised with a lock file. Returns the jar's path.
    """
    jar = jar_path()
    jar.parent.mkdir(parents=True, exist_ok=True)
    with open(jar.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and not _jar_is_stale(jar):
            return jar
        mvn = shutil.which("mvn")
        if mvn is None:
            raise HapiError("Maven ('mvn') is not on PATH: cannot build the HAPI FHIR server")
        # A running server reads classes from its jar until it exits: let Maven write a new file
        # (new inode) instead of overwriting the one that running servers still have open.
        jar.unlink(missing_ok=True)
        proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [mvn, "-q", "-B", "package", "-DskipTests"],
            cwd=HAPI_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if proc.returncode != 0 or not jar.is_file():
            raise HapiError(
                f"Maven build of {HAPI_DIR} failed (exit {proc.returncode}):\n{_tail(proc.stdout)}"
            )
        jar.touch()  # Maven may leave an unchanged jar's old mtime: mark it as fresh
        return jar


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _metadata_ok(base_url: str) -> bool:
    try:
        response = requests.get(
            f"{base_url}/metadata", headers={"Accept": "application/fhir+json"}, timeout=5
        )
    except requests.RequestException:
        return False
    return response.status_code == 200


class HapiServer:
    """One HAPI FHIR server process: ``java -jar`` on ``127.0.0.1:port`` with H2 in ``data_dir``."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        log_file: Path | None = None,
        java: str = "java",
        heap: str = "1g",
        *,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``extra_args`` are appended to the command line, e.g. ``["--sandbox.default-page-size=5"]``
        (any key of ``sandbox/hapi/src/main/resources/application.yaml``)."""
        self.port = port
        self.data_dir = Path(data_dir).resolve()
        self.log_file = Path(log_file).resolve() if log_file is not None else self.data_dir / "hapi.log"
        self.java = java
        self.heap = heap
        self.extra_args = list(extra_args)
        self.base_url: str = f"http://127.0.0.1:{port}/fhir"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The java process id while started."""
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        """The command line that ``start()`` runs."""
        return [
            self.java,
            f"-Xmx{self.heap}",
            *JVM_OPTIONS,
            "-jar",
            str(jar_path()),
            f"--server.port={self.port}",
            f"--sandbox.data-dir={self.data_dir}",
            *self.extra_args,
        ]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server log."""
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as log:
                return "\n".join(line.rstrip("\n") for line in deque(log, maxlen=lines))
        except OSError:
            return ""

    def start(self, timeout: float = 300.0) -> str:
        """Start the server and wait until ``GET {base_url}/metadata`` answers 200.

        Builds the jar first only if it does not exist (call ``build()`` to rebuild a stale one).
        Raises ``HapiError`` with the end of the log if the process exits or is not ready within
        ``timeout`` seconds (then it is stopped). Returns ``base_url``.
        """
        if self.is_running():
            return self.base_url
        if not jar_path().is_file():
            build()
        if _port_in_use(self.port):
            raise HapiError(f"port {self.port} on 127.0.0.1 is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_file, "ab") as log:  # the child keeps its own descriptor
                self._proc = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                    self.command(),
                    cwd=self.data_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: stop() signals java and only java
                )
        except OSError as exc:
            raise HapiError(f"cannot run {self.java!r}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise HapiError(
                    f"HAPI FHIR server exited with code {code} while starting; "
                    f"log {self.log_file}:\n{self.log_tail()}"
                )
            if _metadata_ok(self.base_url):
                return self.base_url
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise HapiError(
                    f"HAPI FHIR server not ready at {self.base_url} after {timeout:.0f} s; "
                    f"log {self.log_file}:\n{tail}"
                )
            time.sleep(_POLL_SECONDS)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the server's process group, then SIGKILL it after ``timeout`` seconds."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        finally:
            self._proc = None

    def is_running(self) -> bool:
        """Whether the server process (started by this object) is alive."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self) -> int:
        """Block until the server process exits; return its exit code."""
        if self._proc is None:
            raise HapiError("the server is not started")
        return self._proc.wait()

    def __enter__(self) -> HapiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped) counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_our_server(pid: int) -> bool:
    """Whether ``pid`` still runs our jar (guards against a pid reused since the pid file)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return JAR_NAME.encode() in cmdline.read()
    except OSError:
        return False


def stop_pid(pid: int, timeout: float = 30.0) -> bool:
    """Stop a server started detached (``start`` command); False if it was not running."""
    if not _pid_alive(pid) or not _is_our_server(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
            break
        time.sleep(0.2)
    return True


def _say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(f"{text}\n")
    stream.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.hapi_server", description="The sandbox HAPI FHIR server."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the jar with Maven (if stale)")
    p_build.add_argument("--force", action="store_true", help="build even if up to date")
    for name, text in (("run", "run in the foreground (Ctrl-C stops)"), ("start", "start detached")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--port", type=int, default=8090)
        p.add_argument("--data-dir", type=Path, required=True, help="H2 database directory")
        p.add_argument("--log-file", type=Path, default=None, help="default DATA_DIR/hapi.log")
        p.add_argument("--heap", default="1g")
        p.add_argument("--java", default="java")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
        if name == "start":
            p.add_argument("--pid-file", type=Path, required=True)
    p_stop = sub.add_parser("stop", help="stop a server started with 'start'")
    p_stop.add_argument("--pid-file", type=Path, required=True)
    p_stop.add_argument("--timeout", type=float, default=30.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "build":
            _say(str(build(force=args.force)))
            return 0
        if args.command == "stop":
            pid_file: Path = args.pid_file
            try:
                pid = int(pid_file.read_text(encoding="ascii").strip())
            except (OSError, ValueError):
                _say(f"no server: cannot read pid file {pid_file}", err=True)
                return 1
            stopped = stop_pid(pid, timeout=args.timeout)
            pid_file.unlink(missing_ok=True)
            _say(f"stopped {pid}" if stopped else f"{pid} was not running")
            return 0
        build()
        server = HapiServer(args.port, args.data_dir, args.log_file, java=args.java, heap=args.heap)
        if args.command == "start":
            started = time.monotonic()
            server.start(timeout=args.timeout)
            args.pid_file.parent.mkdir(parents=True, exist_ok=True)
            args.pid_file.write_text(f"{server.pid}\n", encoding="ascii")
            _say(server.base_url)
            _say(
                f"ready in {time.monotonic() - started:.1f} s, pid {server.pid}, log {server.log_file}",
                err=True,
            )
            return 0
        # run: foreground
        try:
            server.start(timeout=args.timeout)
            _say(f"{server.base_url}  (log {server.log_file}; Ctrl-C stops)")
            return server.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            server.stop()
    except HapiError as exc:
        _say(f"error: {exc}", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
