"""A forwarding HTTP proxy in front of HAPI, for watching what the service sends.

Test instrumentation, not a fake: HAPI (real) answers every request. HAPI does not check tokens,
so this is how a test sees which token was sent where; bound to a chosen port, it also lets a test
bring an "unreachable" server back. ``alter`` may change HAPI's answer before it is passed on, for
what HAPI cannot be made to send (a search Bundle carrying an error OperationOutcome).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import requests


class RecordingProxy:
    def __init__(
        self, upstream: str, port: int = 0, alter: Callable[[str, bytes], bytes] | None = None
    ) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        upstream_parts = urlsplit(upstream)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                outer.seen.append((self.command, self.path, self.headers.get("Authorization")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                reply = requests.request(
                    self.command,
                    f"{upstream_parts.scheme}://{upstream_parts.netloc}{self.path}",
                    data=body,
                    headers={
                        "Accept": "application/fhir+json",
                        "Content-Type": self.headers.get("Content-Type", "application/fhir+json"),
                        "Host": self.headers["Host"],
                    },
                    timeout=30,
                )
                payload = alter(self.path, reply.content) if alter else reply.content
                self.send_response(reply.status_code)
                self.send_header("Content-Type", reply.headers.get("Content-Type", "application/fhir+json"))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_port}{upstream_parts.path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Redirector:
    """A server that answers every request with a redirect: to ``target`` (another origin), or,
    with ``target=None``, to ``/moved`` on itself, where it forwards to ``upstream`` (HAPI) as a
    server that moved its base within its own origin does. It records the requests it gets."""

    def __init__(self, target: str | None, upstream: str | None = None, status: int = 302) -> None:
        self.seen: list[tuple[str, str]] = []
        outer = self
        forward = RecordingProxy(upstream) if upstream else None

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.seen.append((self.command, self.path))
                if forward is not None and self.path.startswith("/moved/"):
                    self._forward(forward, self.path[len("/moved") :])
                    return
                location = f"{target}{self.path}" if target else f"/moved{self.path}"
                self.send_response(status)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _forward(self, proxy: RecordingProxy, path: str) -> None:
                reply = requests.get(
                    proxy.base.split("/fhir")[0] + path,
                    headers={"Accept": "application/fhir+json"},
                    timeout=30,
                )
                self.send_response(reply.status_code)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(reply.content)))
                self.end_headers()
                self.wfile.write(reply.content)

            do_GET = do_PUT = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self._forwarder = forward
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._forwarder is not None:
            self._forwarder.close()
