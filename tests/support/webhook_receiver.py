"""A webhook endpoint on 127.0.0.1 for tests: a real HTTP server that verifies each
request's Standard Webhooks signature, records what it got and answers as told."""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

#: The signing secret of the tests' deliverers and API processes (generated per run).
SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Receiver:
    """A webhook endpoint on 127.0.0.1: verifies each request's signature, records what it
    got, and answers as told (`answers`: status codes for the next requests, then 200).

    `received` holds the requests it answered; `arrived` every verified request as it came
    in, answered or not. `hold` requests are held unanswered until `release` is set (a
    sender killed while it waits: `on_hold` can kill it), then dropped without an answer."""

    def __init__(self, port: int = 0, secret: str = SECRET) -> None:
        self.verifier = Webhook(secret)
        self.port = port
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.arrived: list[tuple[str, dict[str, Any]]] = []
        self.rejected: list[str] = []
        self.answers: list[int] = []
        self.redirect_to: str | None = None
        #: Requests held this long before the answer (a receiver slower than the timeout).
        self.stall_s: list[float] = []
        #: How many of the next requests to hold until `release` (never answered).
        self.hold = 0
        self.release = threading.Event()
        #: Called when a request is held, before anything else happens (e.g. kill its sender).
        self.on_hold: Callable[[], object] | None = None
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    payload = receiver.verifier.verify(body, dict(self.headers))
                except WebhookVerificationError as exc:
                    with receiver.lock:
                        receiver.rejected.append(str(exc))
                    self.send_response(400)
                    self.end_headers()
                    return
                with receiver.lock:
                    receiver.arrived.append((self.headers["webhook-id"], payload))
                    held = receiver.hold > 0
                    if held:
                        receiver.hold -= 1
                    stall = receiver.stall_s.pop(0) if receiver.stall_s else 0.0
                    code = receiver.answers.pop(0) if receiver.answers else 200
                if held:
                    if receiver.on_hold is not None:
                        receiver.on_hold()
                    receiver.release.wait(120)
                    self.close_connection = True
                    return  # no answer: the sender never learns it arrived
                if stall:
                    threading.Event().wait(stall)  # the slow receiver itself, not the test
                with receiver.lock:
                    receiver.received.append((self.headers["webhook-id"], payload))
                self.send_response(302 if receiver.redirect_to else code)
                if receiver.redirect_to:
                    self.send_header("Location", receiver.redirect_to)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def types(self) -> list[str]:
        with self.lock:
            return [payload["type"] for _, payload in self.received]
