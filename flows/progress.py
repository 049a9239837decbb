"""Progress of a workflow: a weighted plan of its steps and a reporter that posts it to the API.

Overall progress is the weighted sum of each step's fraction done. The fractions come from
real measures (ffmpeg's `out_time`, the end time of each transcribed segment, bytes
moved), so the bar moves as the work does. Reports go to
`POST /internal/workflow-progress`, throttled to about one a second per workflow; a lost
report is logged and forgotten (the next one carries the same information), so the flow
never fails because the API was briefly away. A report refused because the workflow is
already terminal (409: cancelled, or declared crashed) is different: the database has given
up on this run, so the reporter raises `WorkflowEndedError` from then on, which stops the
step that reported (an ffmpeg child is killed by its progress callback raising).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import httpx

from domain.lifecycle import TERMINAL_WORKFLOW_STATUSES as TERMINAL_STATUSES
from flows.errors import WorkflowEndedError

log = logging.getLogger(__name__)

#: Relative cost of each kind of step, measured on 2 cores (one hour of 192k MP3):
#: an MP3 encode ~54 CPU-s, tiny.en transcription ~220 CPU-s, download/upload are I/O.
STEP_WEIGHTS: Mapping[str, float] = {
    "download": 3.0,
    "encode": 10.0,
    "transcribe": 40.0,
    "upload": 3.0,
}


@dataclass
class ProgressPlan:
    """The steps of one run and their weights; `fractions` holds how far each has got."""

    weights: dict[str, float]
    fractions: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_run(cls, formats: list[str], transcribe: bool) -> ProgressPlan:
        """download, one encode step per format, transcribe (if asked), upload."""
        weights = {"download": STEP_WEIGHTS["download"]}
        for name in formats:
            weights[f"encode:{name}"] = STEP_WEIGHTS["encode"]
        if transcribe:
            weights["transcribe"] = STEP_WEIGHTS["transcribe"]
        weights["upload"] = STEP_WEIGHTS["upload"]
        return cls(weights=weights)

    def set(self, step: str, fraction: float) -> None:
        """Record a step's fraction (clamped to 0..1, never lowered)."""
        if step not in self.weights:
            raise KeyError(f"step {step!r} is not in the plan ({', '.join(self.weights)})")
        fraction = min(1.0, max(0.0, fraction))
        self.fractions[step] = max(self.fractions.get(step, 0.0), fraction)

    @property
    def percent(self) -> int:
        """Overall progress 0..100; 100 only when every step is done."""
        total = sum(self.weights.values())
        done = sum(w * self.fractions.get(s, 0.0) for s, w in self.weights.items())
        value = int(100 * done / total) if total else 0
        if value == 100 and any(self.fractions.get(s, 0.0) < 1.0 for s in self.weights):
            return 99
        return value


Sender = Callable[[dict[str, Any]], None]


#: Workflow statuses after which the API refuses every report (its 409 names the status),
#: as they come over the wire.
TERMINAL_WORKFLOW_STATUSES = frozenset(status.value for status in TERMINAL_STATUSES)


class ReportRefusedError(RuntimeError):
    """The API answered 4xx: retrying the same report cannot help.

    `workflow_status` is the status a 409 names (`extra.status`), when it names one.
    """

    def __init__(
        self, message: str, *, status_code: int = 0, workflow_status: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.workflow_status = workflow_status

    @property
    def workflow_ended(self) -> bool:
        """True when the refusal says the workflow is terminal: the run must stop."""
        return self.status_code == 409 and self.workflow_status in TERMINAL_WORKFLOW_STATUSES


def _refusal(response: httpx.Response) -> ReportRefusedError:
    workflow_status = None
    try:
        body = response.json()
        extra = body.get("extra") if isinstance(body, dict) else None
        if isinstance(extra, dict) and isinstance(extra.get("status"), str):
            workflow_status = extra["status"]
    except ValueError:
        pass
    return ReportRefusedError(
        f"progress endpoint answered {response.status_code}: {response.text[:300]}",
        status_code=response.status_code,
        workflow_status=workflow_status,
    )


class HttpSender:
    """Posts one report to the progress endpoint, retrying transient failures with backoff."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        attempts: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = f"{api_url.rstrip('/')}/internal/workflow-progress"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._client = httpx.Client(timeout=timeout_s)

    def __call__(self, body: dict[str, Any]) -> None:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.post(self.url, json=body, headers=self.headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return
                if response.status_code < 500 and response.status_code != 429:
                    raise _refusal(response)
                problem = f"HTTP {response.status_code}"
            if attempt == self.attempts:
                raise ConnectionError(
                    f"progress report not delivered after {attempt} tries: {problem}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def close(self) -> None:
        self._client.close()


@dataclass(eq=False)
class WorkflowProgressReporter:
    """Reports a workflow's step, message and weighted progress to the API.

    Thread-safe: the flow's steps run side by side and each reports its own fraction.
    `update()` is throttled; `report()` always sends (status changes, step ends).
    Once a report was refused because the workflow is terminal, `update()`,
    `finish_step()` and `checkpoint()` raise `WorkflowEndedError` (every step stops at
    its next report); `report()`, used by the state hooks, only returns False.
    """

    task_id: str
    workflow_id: str
    plan: ProgressPlan
    send: Sender
    _: KW_ONLY
    min_interval_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    on_report: Callable[[int, str | None], None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._last_sent = float("-inf")
        self._last_percent = -1
        self._refused = False
        self._ended: str | None = None

    def raise_if_ended(self) -> None:
        """Raise WorkflowEndedError if the API has said the workflow is terminal."""
        if self._ended is not None:
            raise WorkflowEndedError(self._ended)

    def checkpoint(self, step: str, message: str | None = None) -> None:
        """Report now (not throttled) and raise WorkflowEndedError if the workflow ended.

        Called before work that must not happen for a workflow the API has given up on
        (each upload). An unreachable API does not stop the run: only a refusal does.
        """
        self.raise_if_ended()
        self._post(step=step, message=message)
        self.raise_if_ended()

    def update(self, step: str, fraction: float, message: str | None = None) -> None:
        """Record a step's fraction; send at most once per interval."""
        self.raise_if_ended()
        with self._lock:
            self.plan.set(step, fraction)
            now = self.clock()
            due = now - self._last_sent >= self.min_interval_s
            changed = self.plan.percent != self._last_percent
            if not (due and changed):
                return
            self._last_sent = now
        self._post(step=step, message=message)
        self.raise_if_ended()

    def finish_step(self, step: str, message: str | None = None) -> None:
        """Mark a step done and report it now."""
        with self._lock:
            self.plan.set(step, 1.0)
            self._last_sent = self.clock()
        self._post(step=step, message=message)
        self.raise_if_ended()

    def report(self, **fields: Any) -> bool:
        """Send a report now (status changes, results); False if it was not delivered."""
        return self._post(**fields)

    def _post(self, **fields: Any) -> bool:
        if self._refused:
            return False
        percent = self.plan.percent
        body: dict[str, Any] = {"taskId": self.task_id, "workflowId": self.workflow_id}
        if "progress" not in fields:
            body["progress"] = percent
        for key, value in fields.items():
            if value is not None:
                body[_camel(key)] = value
        try:
            self.send(body)
        except ReportRefusedError as exc:
            # Typically 409: the workflow is already terminal (cancelled, reconciled).
            log.warning("progress report refused, stopping reports: %s", exc)
            self._refused = True
            if exc.workflow_ended:
                self._ended = (
                    f"stopped: workflow {self.workflow_id} is already {exc.workflow_status} "
                    "in the database (cancelled or given up on), so this run's work is not wanted"
                )
            return False
        except Exception as exc:
            log.warning("progress report lost: %s", exc)
            return False
        with self._lock:
            self._last_percent = max(self._last_percent, percent)
        if self.on_report is not None:
            self.on_report(percent, fields.get("step"))
        return True


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
