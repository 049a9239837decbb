"""A fast loopback webhook receiver in its own process: `python -m bench.webhook_receiver`.

Reads the signing secret (`whsec_...`) on the first line of stdin, listens on 127.0.0.1
(a free port), prints `ready <port>`, and answers every POST with 204 at once (HTTP/1.1
keep-alive, a thread per connection, as the deliverer's clients keep theirs). It records
for each delivery when it arrived, the event's `timestamp` (when the event was written)
and its type, and checks the Standard Webhooks signature of every `verify_every`-th one
with the `standardwebhooks` library (the second line of stdin, default 10). A line `stop`
ends it; it prints a JSON result.

Its own process, so that it shares no interpreter lock with the load generators or the
API; the API's delivery threads are what is measured.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TIMESTAMP_MARK = b'"timestamp":"'


class Tally:
    def __init__(self, secret: str, verify_every: int) -> None:
        self.hook = Webhook(secret)
        self.verify_every = max(1, verify_every)
        self.lock = threading.Lock()
        #: `[received at, event written at, type]` (Unix times).
        self.deliveries: list[tuple[float, float | None, str]] = []
        self.ids: Counter[str] = Counter()
        self.verified = 0
        self.verify_failed: Counter[str] = Counter()

    def record(self, body: bytes, headers: dict[str, str]) -> None:
        now = time.time()
        written = event_time(body)
        kind = event_type(body)
        with self.lock:
            self.deliveries.append((now, written, kind))
            self.ids[headers.get("webhook-id", "")] += 1
            check = len(self.deliveries) % self.verify_every == 1 % self.verify_every
        if check:
            try:
                self.hook.verify(body, headers)
                ok = True
            except WebhookVerificationError as exc:
                ok = False
                with self.lock:
                    self.verify_failed[str(exc)[:80]] += 1
            if ok:
                with self.lock:
                    self.verified += 1


def event_time(body: bytes) -> float | None:
    """The body's `timestamp` (when the event was written) as a Unix time."""
    at = body.find(TIMESTAMP_MARK)
    if at < 0:
        return None
    start = at + len(TIMESTAMP_MARK)
    end = body.find(b'"', start)
    try:
        return datetime.fromisoformat(body[start:end].decode().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def event_type(body: bytes) -> str:
    start = body.find(b'"type":"')
    if start < 0:
        return "?"
    start += 8
    return body[start : body.find(b'"', start)].decode()


def handler_for(tally: Tally) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            tally.record(body, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    secret = sys.stdin.readline().strip()
    verify_every = int(sys.stdin.readline().strip() or 10)
    tally = Tally(secret, verify_every)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(tally))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(f"ready {server.server_address[1]}", flush=True)
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    server.shutdown()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with tally.lock:
        result = {
            "deliveries": tally.deliveries,
            "unique_ids": len(tally.ids),
            "repeated_ids": sum(n - 1 for n in tally.ids.values() if n > 1),
            "verified": tally.verified,
            "verify_failed": dict(tally.verify_failed),
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
