"""The object-key layout and the key rules every store enforces."""

from __future__ import annotations

import re

import pytest

from core.formats import FORMATS, get_format
from core.keys import (
    InvalidKeyError,
    attempt_label,
    attempt_prefix,
    audio_output_key,
    manifest_key,
    output_prefix,
    sanitize_filename,
    tasks_prefix,
    transcript_key,
    upload_key,
    validate_episode_id,
    validate_key,
    validate_prefix,
)

TASK = "5f0c6a8e-2b7d-4c1e-9a3f-0d1e2f3a4b5c"
OTHER_TASK = "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"
WORKFLOW = "9e8d7c6b-5a49-4382-b1a0-f9e8d7c6b5a4"


def test_layout() -> None:
    prefix = attempt_prefix("ep-1", TASK, attempt_label(2))
    assert prefix == f"episodes/ep-1/tasks/{TASK}/a2/"
    assert audio_output_key(prefix, get_format("mp3_128")) == f"{prefix}audio/mp3_128.mp3"
    assert audio_output_key(prefix, get_format("aac_128")) == f"{prefix}audio/aac_128.m4a"
    assert transcript_key(prefix, "json") == f"{prefix}transcript/transcript.json"
    assert transcript_key(prefix, ".VTT") == f"{prefix}transcript/transcript.vtt"
    assert manifest_key("ep-1") == "episodes/ep-1/manifest.json"
    assert tasks_prefix("ep-1") == "episodes/ep-1/tasks/"
    # Runs created before the attempt was a flow parameter: one folder per workflow row.
    assert attempt_label(None, WORKFLOW) == f"w{WORKFLOW}"
    # The layout before attempt folders is still spelled by the same functions.
    legacy = output_prefix("ep-1")
    assert audio_output_key(legacy, get_format("mp3_128")) == "episodes/ep-1/audio/mp3_128.mp3"
    assert transcript_key(legacy, "txt") == "episodes/ep-1/transcript/transcript.txt"


def test_attempts_never_share_a_key() -> None:
    """Two tasks of one episode, or two attempts of one task, write disjoint sets of keys,
    none of them the manifest's or another episode's."""
    folders = [
        attempt_prefix("e.1_x", TASK, attempt_label(1)),
        attempt_prefix("e.1_x", TASK, attempt_label(2)),
        attempt_prefix("e.1_x", TASK, attempt_label(None, WORKFLOW)),
        attempt_prefix("e.1_x", OTHER_TASK, attempt_label(1)),
    ]
    sets = [
        {audio_output_key(p, fmt) for fmt in FORMATS.values()} | {transcript_key(p, "json")}
        for p in folders
    ]
    assert all(len(keys) == len(FORMATS) + 1 for keys in sets)  # no two formats share a key
    for i, keys in enumerate(sets):
        assert all(key.startswith(folders[i]) for key in keys)
        for j, other in enumerate(folders):
            if i != j:
                assert not any(key.startswith(other) for key in keys)
        assert manifest_key("e.1_x") not in keys
    # The trailing slash keeps episode "abc" from matching "abcd".
    abcd = attempt_prefix("abcd", TASK, "a1")
    assert not abcd.startswith(output_prefix("abc"))


def test_task_ids_are_canonical_uuids() -> None:
    """The task id in a key is the UUID's canonical spelling, whatever form it came in."""
    assert attempt_prefix("e", TASK.upper(), "a1") == attempt_prefix("e", TASK, "a1")
    assert attempt_label(None, "{" + WORKFLOW + "}") == f"w{WORKFLOW}"


@pytest.mark.parametrize(
    ("task_id", "label"),
    [
        ("../other", "a1"),
        ("", "a1"),
        (None, "a1"),
        (TASK, "a0"),
        (TASK, "../a1"),
        (TASK, "a1/../../x"),
        (TASK, ""),
        (TASK, "b1"),
        (TASK, "w../../../../etc/passwd/xxxxxxxxxxxxxx"),
    ],
)
def test_bad_attempt_folders_are_refused(task_id: object, label: str) -> None:
    with pytest.raises(InvalidKeyError):
        attempt_prefix("ep", task_id, label)


@pytest.mark.parametrize(
    ("attempt", "workflow_id"),
    [(0, None), (-1, None), (True, None), ("1", None), (1.5, None), (None, None), (None, "x/..")],
)
def test_bad_attempt_labels_are_refused(attempt: object, workflow_id: object) -> None:
    with pytest.raises(InvalidKeyError):
        attempt_label(attempt, workflow_id)


def test_output_keys_need_a_folder_prefix() -> None:
    with pytest.raises(InvalidKeyError, match="must end with '/'"):
        audio_output_key("episodes/e1", get_format("wav"))
    with pytest.raises(InvalidKeyError):
        audio_output_key("../", get_format("wav"))


def test_upload_keys_are_unique_and_sanitized() -> None:
    first = upload_key("My Episode #1.mp3")
    second = upload_key("My Episode #1.mp3")
    assert first != second
    assert re.fullmatch(r"uploads/[0-9a-f]{32}/My_Episode_1\.mp3", first)
    validate_key(first)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\épisode 2.WAV", "episode_2.WAV"),
        ("..hidden.mp3", "hidden.mp3"),
        ("", "upload"),
        ("...", "upload"),
        ("日本語", "upload"),
        ("a\x00b\nc.mp3", "a_b_c.mp3"),
    ],
)
def test_sanitize_filename(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


def test_sanitize_filename_keeps_the_extension_of_long_names() -> None:
    name = sanitize_filename("x" * 500 + ".flac")
    assert len(name) == 120
    assert name.endswith(".flac")


@pytest.mark.parametrize("episode_id", ["a", "A-1", "ep_2024.01", "x" * 128, "0", "-x", "_"])
def test_valid_episode_ids(episode_id: str) -> None:
    assert validate_episode_id(episode_id) == episode_id


@pytest.mark.parametrize(
    "episode_id",
    ["", ".", "..", ".hidden", "a/b", "a b", "x" * 129, "é", "a\x00", "a\n", 42, None],
)
def test_invalid_episode_ids(episode_id: object) -> None:
    with pytest.raises(InvalidKeyError, match="invalid episode id"):
        validate_episode_id(episode_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidKeyError):
        output_prefix(episode_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "key",
    ["a", "episodes/e1/audio/mp3_128.mp3", "uploads/abc/file name.mp3", "a.b/c..d/.e", "ü/ß"],
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("..", "segment"),
        ("../x", "segment"),
        ("a/../b", "segment"),
        ("a/..", "segment"),
        ("a/./b", "segment"),
        ("a//b", "segment"),
        ("/abs", "absolute"),
        ("/", "absolute"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a\rb", "control"),
        ("a\tb", "control"),
        ("a\x7fb", "control"),
        ("a\\b", "backslash"),
        ("..\\x", "backslash"),
        (" a", "whitespace"),
        ("a ", "whitespace"),
        ("a/", "prefix"),
        ("x" * 1025, "1024 bytes"),
        ("é" * 513, "1024 bytes"),  # 1026 bytes in UTF-8
    ],
)
def test_bad_keys_are_refused(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError, match=reason):
        validate_key(key)


def test_key_at_the_limit_is_accepted() -> None:
    validate_key("x" * 1024)


def test_non_string_key() -> None:
    with pytest.raises(InvalidKeyError, match="string"):
        validate_key(b"a")  # type: ignore[arg-type]


def test_prefixes() -> None:
    assert validate_prefix("episodes/") == "episodes/"
    assert validate_prefix("episodes/e1") == "episodes/e1"
    for bad in ("", "/", "../", "a//", "a/../", "a\n/"):
        with pytest.raises(InvalidKeyError):
            validate_prefix(bad)


@pytest.mark.parametrize("ext", ["", ".", "j/son", "../x", "x" * 17, "t x"])
def test_bad_transcript_extensions(ext: str) -> None:
    with pytest.raises(InvalidKeyError, match="extension"):
        transcript_key("episodes/e1/", ext)
