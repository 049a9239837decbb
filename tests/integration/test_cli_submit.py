"""`audioflow submit`'s loudness, metadata, chapters and waveform options, through the
real API in-process: the CLI's HTTP client is the app's test client (an httpx client), so
the upload is checked by decoding and the task is stored as the API stores any other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from cli import main as cli_main
from cli.client import ApiClient
from core.settings import Settings
from core.storage import build_store
from tests.support.audio_files import tone_wav_bytes
from tests.support.rows import count_rows


@pytest.fixture
def run_cli(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """`audioflow <args> --json` against the test app: (exit code, printed task, stderr)."""

    def api_client(_args: Any) -> ApiClient:
        api = ApiClient("http://testserver.local")
        api.http = client  # the app's own test client: same requests, no socket
        return api

    monkeypatch.setattr(cli_main, "_client", api_client)

    def run(*args: str) -> tuple[int, dict[str, Any] | None, str]:
        code = cli_main.main(list(args))
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 and out.strip() else None), err

    return run


@pytest.fixture
def episode(tmp_path: Path) -> Path:
    path = tmp_path / "pilot.wav"
    path.write_bytes(tone_wav_bytes(1.0))
    return path


def test_submit_sends_the_options_and_the_api_stores_them(
    run_cli: Any, episode: Path, tmp_path: Path
) -> None:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"title": "Pilot", "episodeNumber": 1, "date": "2026-11-29"}))
    chapters = tmp_path / "chapters.json"
    # A Podcasting 2.0 chapters file's shape: the list under "chapters".
    chapters.write_text(
        json.dumps({"version": "1.2.0", "chapters": [{"startTime": 0, "title": "Intro"}]})
    )
    code, task, err = run_cli(
        "submit", str(episode), "--formats", "mp3_64", "--no-transcribe", "--json",
        "--target-lufs", "-18", "--true-peak", "-2",
        "--metadata", str(metadata), "--chapters", str(chapters), "--no-waveform",
    )  # fmt: skip
    assert code == 0, err
    assert task is not None
    payload = task["payload"]
    assert payload["loudness"] == {
        "targetLufs": -18.0,
        "truePeakDbtp": -2.0,
        "targetLufsMono": -21.0,
    }
    assert payload["metadata"]["title"] == "Pilot" and payload["metadata"]["episodeNumber"] == 1
    assert payload["chapters"] == [
        {"startTime": 0.0, "title": "Intro", "url": None, "imageKey": None}
    ]
    assert payload["waveform"] is False


def test_submit_without_the_options_leaves_the_apis_defaults(
    run_cli: Any, episode: Path
) -> None:
    code, task, err = run_cli("submit", str(episode), "--formats", "mp3_64", "--json")
    assert code == 0, err
    assert task is not None
    payload = task["payload"]
    assert payload["loudness"]["targetLufs"] == -16.0
    assert (payload["metadata"], payload["chapters"], payload["waveform"]) == (None, None, True)

    code, task, err = run_cli(
        "submit", str(episode), "--formats", "mp3_64", "--json", "--no-loudness", "--no-chapters"
    )
    assert code == 0, err
    assert task is not None
    assert task["payload"]["loudness"] is None and task["payload"]["chapters"] == []


def test_bad_options_stop_before_the_upload(
    run_cli: Any,
    episode: Path,
    tmp_path: Path,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    store = build_store(settings.storage)
    uploads = set(store.list_keys("uploads/"))
    bad_json = tmp_path / "meta.json"
    bad_json.write_text("{title: Pilot}")
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    for args, needle in (
        (["--no-loudness", "--target-lufs", "-14"], "--no-loudness cannot be combined"),
        (["--metadata", str(tmp_path / "missing.json")], "No such file"),
        (["--metadata", str(bad_json)], "not JSON"),
        (["--metadata", str(not_object)], "expected a JSON object"),
        (["--chapters", str(bad_json)], "not JSON"),
        (["--chapters", str(tmp_path / "missing.json")], "No such file"),
    ):
        code, _task, err = run_cli("submit", str(episode), *args)
        assert code == 2, (args, err)
        assert needle in err, err
    assert set(store.list_keys("uploads/")) == uploads  # nothing was uploaded
    assert count_rows(session_factory) == 0


def test_values_the_api_refuses_come_back_naming_the_field(
    run_cli: Any, episode: Path, tmp_path: Path, session_factory: sessionmaker[Session]
) -> None:
    chapters = tmp_path / "chapters.json"
    unsorted = [{"startTime": 10, "title": "B"}, {"startTime": 0, "title": "A"}]
    chapters.write_text(json.dumps(unsorted))
    code, _task, err = run_cli("submit", str(episode), "--chapters", str(chapters))
    assert code == 2
    assert "(422): payload.chapters: chapter 2: startTime 0.0 is before" in err
    code, _task, err = run_cli("submit", str(episode), "--target-lufs", "-3")
    assert code == 2 and "payload.loudness.targetLufs: Expected `float` <= -5.0" in err
    assert count_rows(session_factory) == 0
