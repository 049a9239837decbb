"""The output-format registry: names, lookups, and ffmpeg options that match the fields."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.formats import (
    FORMATS,
    TRANSCRIPT_FORMATS,
    AudioFormat,
    UnknownFormatError,
    check_format_names,
    format_names,
    get_format,
    get_transcript_format,
)

REQUIRED = {"mp3_128", "mp3_320", "mp3_64", "aac_128", "opus_64", "flac", "wav"}


def test_registry_has_every_required_format() -> None:
    assert set(FORMATS) >= REQUIRED
    assert format_names() == list(FORMATS)
    for name, fmt in FORMATS.items():
        assert fmt.name == name
        assert get_format(name) is fmt


@pytest.mark.parametrize("name", ["mp3", "MP3_128", "", "mp3_128 ", "../wav"])
def test_unknown_name_lists_the_known_ones(name: str) -> None:
    with pytest.raises(UnknownFormatError) as caught:
        get_format(name)
    assert isinstance(caught.value, ValueError)
    message = str(caught.value)
    assert repr(name) in message
    for known in FORMATS:
        assert known in message


def test_non_string_name_is_refused_cleanly() -> None:
    with pytest.raises(UnknownFormatError):
        get_format(None)  # type: ignore[arg-type]
    with pytest.raises(UnknownFormatError):
        get_format(["mp3_128"])  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_ffmpeg_args_agree_with_the_declared_fields(fmt: AudioFormat) -> None:
    args = list(fmt.ffmpeg_args)
    assert args[-2] == "-f", "the muxer must be named: outputs are written to temp names"

    def value_of(option: str) -> str | None:
        return args[args.index(option) + 1] if option in args else None

    assert value_of("-c:a")
    assert value_of("-b:a") == (f"{fmt.bitrate_kbps}k" if fmt.bitrate_kbps else None)
    assert value_of("-ar") == (str(fmt.sample_rate) if fmt.sample_rate else None)
    if fmt.channels is None:
        assert value_of("-ac") is None
        assert value_of("-af") == "aformat=channel_layouts=mono|stereo"
    else:
        assert value_of("-ac") == str(fmt.channels)
    assert fmt.extension and "." not in fmt.extension
    assert "/" in fmt.content_type


def test_specific_choices() -> None:
    assert get_format("mp3_64").channels == 1
    assert get_format("mp3_128").channels is None  # stereo stays stereo, mono stays mono
    assert get_format("opus_64").sample_rate == 48000
    assert get_format("wav").codec == "pcm_s16le"
    assert "+faststart" in get_format("aac_128").ffmpeg_args
    assert get_format("aac_128").extension == "m4a"
    assert all(get_format(n).constant_bitrate for n in ("mp3_64", "mp3_128", "mp3_320"))


def test_formats_are_immutable() -> None:
    fmt = get_format("mp3_128")
    with pytest.raises(AttributeError):
        fmt.bitrate_kbps = 1  # type: ignore[misc]


def test_module_is_import_light() -> None:
    """The API imports the registry on every request path: no subprocess or boto3."""
    code = (
        "import sys, core.formats; "
        "heavy = {'subprocess', 'boto3', 'botocore'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_format_names_are_checked_in_one_place() -> None:
    assert check_format_names(["mp3_128", "flac"]) == ["mp3_128", "flac"]
    assert check_format_names([]) == []
    unknown = r"unknown encoding format\(s\): mp3_999, ogg; known: mp3_128"
    with pytest.raises(ValueError, match=unknown):
        check_format_names(["mp3_999", "mp3_128", "ogg"])
    with pytest.raises(ValueError, match="twice"):
        check_format_names(["flac", "flac"])


def test_transcript_formats_carry_name_extension_and_mime_type() -> None:
    assert {n: (f.extension, f.content_type) for n, f in TRANSCRIPT_FORMATS.items()} == {
        "json": ("json", "application/json"),
        "vtt": ("vtt", "text/vtt"),
        "srt": ("srt", "application/x-subrip"),
        "txt": ("txt", "text/plain"),
        "html": ("html", "text/html"),
    }
    assert get_transcript_format("srt") is TRANSCRIPT_FORMATS["srt"]
    with pytest.raises(UnknownFormatError, match=r"unknown transcript format 'docx'.*json, vtt"):
        get_transcript_format("docx")
