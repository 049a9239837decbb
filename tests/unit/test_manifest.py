"""The manifest writer: what a manifest holds, how a malformed one is read, and that a
writer that lost a race to a newer completion writes again."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.keys import manifest_key
from core.storage.local import LocalStore
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from domain.manifest import (
    ManifestPublisher,
    build_manifest,
    manifest_keys,
    read_manifest,
)

NOW = datetime(2026, 11, 29, 6, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _done(episode: str, result: Any, attempt: int = 1) -> tuple[Task, Workflow]:
    task = Task(
        id=uuid.uuid4(),
        type="audio_processing",
        status=TaskStatus.DONE,
        episode_id=episode,
        payload={},
        result=result,
    )
    workflow = Workflow(
        id=uuid.uuid4(),
        task_id=task.id,
        attempt=attempt,
        status=WorkflowStatus.COMPLETED,
        completed_at=NOW,
    )
    return task, workflow


def _result(prefix: str) -> dict[str, Any]:
    return {
        "outputs": {
            "mp3_64": {"key": f"{prefix}audio/mp3_64.mp3", "size": 10, "codec": "mp3"},
            "opus_64": {"key": f"{prefix}audio/opus_64.opus", "size": 7},
        },
        "transcript": {"language": "en", "keys": {"txt": f"{prefix}transcript/transcript.txt"}},
    }


def test_the_manifest_names_one_tasks_result() -> None:
    task, workflow = _done("ep-1", _result("episodes/ep-1/tasks/t/a2/"), attempt=2)
    manifest = build_manifest(task, workflow, now=NOW)
    assert manifest == {
        "version": 1,
        "episodeId": "ep-1",
        "taskId": str(task.id),
        "workflowId": str(workflow.id),
        "attempt": 2,
        "completedAt": NOW.isoformat(),
        "publishedAt": NOW.isoformat(),
        "outputs": {
            "mp3_64": {"key": "episodes/ep-1/tasks/t/a2/audio/mp3_64.mp3", "size": 10},
            "opus_64": {"key": "episodes/ep-1/tasks/t/a2/audio/opus_64.opus", "size": 7},
        },
        "transcript": {
            "language": "en",
            "keys": {"txt": "episodes/ep-1/tasks/t/a2/transcript/transcript.txt"},
        },
    }
    assert manifest_keys(manifest) == {
        "episodes/ep-1/tasks/t/a2/audio/mp3_64.mp3",
        "episodes/ep-1/tasks/t/a2/audio/opus_64.opus",
        "episodes/ep-1/tasks/t/a2/transcript/transcript.txt",
    }


def test_the_manifest_names_the_chapters_and_waveform_files() -> None:
    """The files issue 12 adds are named, and so protected from the retention sweep."""
    prefix = "episodes/ep-1/tasks/t/a1/"
    result = _result(prefix) | {
        "chapters": {"key": f"{prefix}chapters/chapters.json", "count": 3, "origin": "source"},
        "waveform": {"key": f"{prefix}waveform/waveform.json", "length": 1200},
    }
    manifest = build_manifest(*_done("ep-1", result), now=NOW)
    assert manifest["chapters"] == {"key": f"{prefix}chapters/chapters.json"}
    assert manifest["waveform"] == {"key": f"{prefix}waveform/waveform.json"}
    assert {f"{prefix}chapters/chapters.json", f"{prefix}waveform/waveform.json"} <= (
        manifest_keys(manifest)
    )
    # A result without them (no chapters anywhere, or made before issue 12) names neither.
    plain = build_manifest(*_done("ep-1", _result(prefix)), now=NOW)
    assert "chapters" not in plain and "waveform" not in plain


@pytest.mark.parametrize(
    "result",
    [
        None,
        {"chapters": "x", "waveform": {"key": 5}},
        [],
        {"outputs": []},
        {"outputs": {"mp3_64": "x"}},
        {"outputs": {"mp3_64": {"key": 5}}},
        {"transcript": "x"},
        {"transcript": {"keys": ["a"]}},
    ],
)
def test_a_malformed_result_names_nothing_instead_of_failing(result: Any) -> None:
    manifest = build_manifest(*_done("ep-1", result), now=NOW)
    assert manifest_keys(manifest) == set()


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'"x"', b'{"outputs": [1]}', b'{"transcript": {"keys": 3}}'],
)
def test_a_malformed_stored_manifest_reads_as_naming_nothing(
    store: LocalStore, body: bytes
) -> None:
    store.put_stream(manifest_key("ep-1"), io.BytesIO(body))
    assert manifest_keys(read_manifest(store, "ep-1")) == set()


def test_an_oversized_manifest_is_not_parsed(store: LocalStore) -> None:
    store.put_stream(manifest_key("ep-1"), io.BytesIO(b" " * (1024 * 1024 + 1)))
    assert read_manifest(store, "ep-1") is None
    assert read_manifest(store, "ep-none") is None


class _ScriptedPublisher(ManifestPublisher):
    """The database's answer changes between the writer's reads, as when another task of
    the episode completes while this writer is putting the manifest."""

    def __init__(self, store: LocalStore, answers: list[tuple[Task, Workflow] | None]) -> None:
        super().__init__(None, store, clock=lambda: NOW)  # type: ignore[arg-type]
        self.answers = answers
        self.reads = 0

    def _current(self, episode_id: str) -> tuple[Task, Workflow] | None:
        answer = self.answers[min(self.reads, len(self.answers) - 1)]
        self.reads += 1
        return answer


def test_a_writer_that_lost_the_race_writes_the_newer_completion(store: LocalStore) -> None:
    older = _done("ep-1", _result("episodes/ep-1/tasks/a/a1/"))
    newer = _done("ep-1", _result("episodes/ep-1/tasks/b/a1/"))
    publisher = _ScriptedPublisher(store, [older, newer, newer])
    written = publisher.publish("ep-1")
    assert written is not None and written["taskId"] == str(newer[0].id)
    stored = read_manifest(store, "ep-1")
    assert stored is not None and stored["taskId"] == str(newer[0].id)
    assert manifest_keys(stored) == manifest_keys(build_manifest(*newer, now=NOW))
    assert publisher.reads == 3  # wrote twice, then found nothing newer


def test_no_completion_leaves_any_manifest_alone(store: LocalStore) -> None:
    store.put_stream(manifest_key("ep-1"), io.BytesIO(json.dumps({"taskId": "x"}).encode()))
    assert _ScriptedPublisher(store, [None]).publish("ep-1") is None
    assert read_manifest(store, "ep-1") == {"taskId": "x"}


def test_repair_is_idempotent(store: LocalStore) -> None:
    done = _done("ep-1", _result("episodes/ep-1/tasks/a/a1/"))
    assert _ScriptedPublisher(store, [done]).repair("ep-1") is True
    assert _ScriptedPublisher(store, [done]).repair("ep-1") is False
