"""The object-key layout and the key rules every store enforces."""

from __future__ import annotations

import re

import pytest

from core.formats import FORMATS, get_format
from core.keys import (
    InvalidKeyError,
    audio_output_key,
    output_prefix,
    sanitize_filename,
    transcript_key,
    upload_key,
    validate_episode_id,
    validate_key,
    validate_prefix,
)


def test_layout() -> None:
    assert output_prefix("ep-1") == "episodes/ep-1/"
    assert audio_output_key("ep-1", get_format("mp3_128")) == "episodes/ep-1/audio/mp3_128.mp3"
    assert audio_output_key("ep-1", get_format("aac_128")) == "episodes/ep-1/audio/aac_128.m4a"
    assert transcript_key("ep-1", "json") == "episodes/ep-1/transcript/transcript.json"
    assert transcript_key("ep-1", ".VTT") == "episodes/ep-1/transcript/transcript.vtt"


def test_outputs_are_a_pure_function_of_episode_and_format() -> None:
    """A rerun writes exactly the same keys, all under the episode's prefix."""
    keys = {audio_output_key("e.1_x", fmt) for fmt in FORMATS.values()}
    assert len(keys) == len(FORMATS)  # no two formats share a key
    assert keys == {audio_output_key("e.1_x", fmt) for fmt in FORMATS.values()}
    assert all(key.startswith(output_prefix("e.1_x")) for key in keys)
    # The trailing slash keeps episode "abc" from matching "abcd".
    assert not audio_output_key("abcd", get_format("wav")).startswith(output_prefix("abc"))


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
        transcript_key("e1", ext)
