"""Tags, cover art and chapters written into every output format, read back with ffprobe.

Every output format in `core.formats` is encoded from a short lavfi tone by `media.encode`,
tagged by `media.tags.write_tags`, and then read back by ffprobe (`-show_format
-show_chapters -show_streams`), never by the module under test: what a listener's player
(nearly all of them ffmpeg- or platform-based) would see. Cover images are made by ffmpeg
too, and their sizes measured by ffprobe.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest

from core.episode_metadata import Chapter, ChapterError, CoverArt, EpisodeMetadata, MetadataError
from core.formats import FORMATS, AudioFormat, get_format
from media.cover import CoverArtError, check_cover
from media.encode import encode
from media.probe import probe_source, verify_output
from media.tags import write_tags
from tests.audio.conftest import MakeAudio
from tests.support.tag_readers import all_tags, ffprobe_json

#: Seconds of audio in the tagged files.
SOURCE_S = 4.0
CHAPTERS = (
    Chapter(0.0, "Cold open"),
    Chapter(1.25, "Interview = part 1; #2 \\ «ünïcode»", url="https://example.org/part-1"),
    Chapter(2.5, "Outro"),
)
DESCRIPTION = "Show notes, line one.\nLine two: links and credits."



def decodes_cleanly(path: Path) -> bool:
    """ffmpeg decodes the whole file without a single error message."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return done.returncode == 0 and not done.stderr.strip()


@pytest.fixture(scope="module")
def tone(make_audio: MakeAudio) -> Path:
    """A 4 s stereo 44.1 kHz WAV tone: the source of every tagged output."""
    return make_audio(
        "tags-tone.wav", "-f", "lavfi", "-i", f"sine=frequency=440:duration={SOURCE_S}",
        "-ac", "2", "-ar", "44100", "-c:a", "pcm_s16le",
    )  # fmt: skip


@pytest.fixture(scope="module")
def cover_jpeg(make_audio: MakeAudio) -> Path:
    """A 160x120 JPEG made by ffmpeg (JFIF, with a comment segment before the frame)."""
    return make_audio("cover.jpg", "-f", "lavfi", "-i", "testsrc=size=160x120", "-frames:v", "1")


@pytest.fixture(scope="module")
def cover_png(make_audio: MakeAudio) -> Path:
    """A 96x64 PNG made by ffmpeg."""
    return make_audio("cover.png", "-f", "lavfi", "-i", "testsrc=size=96x64", "-frames:v", "1")


def metadata(cover: CoverArt | None) -> EpisodeMetadata:
    return EpisodeMetadata.checked(
        title="Épisode 12: Tags & chapters",
        artist="Ada Host",
        album="The Audioflow Show",
        date="2026-11-29",
        episode_number=12,
        description=DESCRIPTION,
        cover=cover,
    )


def encoded(tone: Path, fmt: AudioFormat, folder: Path) -> Path:
    dest = folder / f"{fmt.name}.{fmt.extension}"
    encode(tone, dest, fmt)
    return dest


#: Where each format's description comes back in ffprobe (ffmpeg's tag names).
_DESCRIPTION_KEY = {"m4a": "description"}


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_every_format_carries_tags_cover_and_chapters(
    fmt: AudioFormat, tone: Path, cover_jpeg: Path, cover_png: Path, tmp_path: Path
) -> None:
    # PNG for the lossless formats, JPEG for the rest: both kinds go through every writer
    # family (ID3: mp3 JPEG / wav PNG; MP4: JPEG; Vorbis: opus JPEG / flac PNG).
    image = cover_png if fmt.extension in ("flac", "wav") else cover_jpeg
    cover = check_cover(image.read_bytes())
    out = encoded(tone, fmt, tmp_path)
    untagged_duration = float(ffprobe_json(out)["format"]["duration"])

    report = write_tags(out, fmt, metadata(cover), CHAPTERS)

    probed = ffprobe_json(out)
    tags = all_tags(probed)
    assert tags["title"] == "Épisode 12: Tags & chapters"
    assert tags["artist"] == "Ada Host"
    assert tags["album"] == "The Audioflow Show"
    assert tags["date"] == "2026-11-29"
    assert tags["track"].split("/")[0] == "12"
    assert tags[_DESCRIPTION_KEY.get(fmt.extension, "comment")] == DESCRIPTION
    if fmt.extension == "m4a":
        assert tags["synopsis"] == DESCRIPTION  # ldes: the long description
    # Only the payload's metadata: not even ffmpeg's own encoder tag is left in the
    # container (an MP3's audio stream still reports the LAME header's encoder version,
    # which is part of the first audio frame, not a tag).
    assert "encoder" not in {key.lower() for key in probed["format"].get("tags", {})}
    if fmt.extension == "opus":
        assert "encoder" not in tags

    chapters = probed["chapters"]
    assert [c["tags"]["title"] for c in chapters] == [c.title for c in CHAPTERS]
    starts = [float(c["start_time"]) for c in chapters]
    assert starts == pytest.approx([c.start_s for c in CHAPTERS], abs=0.001)
    ends = [float(c["end_time"]) for c in chapters]
    assert ends[:-1] == pytest.approx(starts[1:], abs=0.001)
    assert ends[-1] == pytest.approx(untagged_duration, abs=0.05)

    pictures = [s for s in probed["streams"] if s["disposition"].get("attached_pic") == 1]
    assert len(pictures) == 1, "exactly one attached cover picture"
    picture = pictures[0]
    assert picture["codec_name"] == ("png" if image.suffix == ".png" else "mjpeg")
    assert (picture["width"], picture["height"]) == (cover.width, cover.height)

    # The audio is untouched: same codec, same length, decodes without an error.
    audio = [s for s in probed["streams"] if s["codec_type"] == "audio"]
    assert len(audio) == 1 and audio[0]["codec_name"] == fmt.codec
    assert float(probed["format"]["duration"]) == pytest.approx(untagged_duration, abs=0.05)
    assert decodes_cleanly(out)
    # The flow's own output check still passes on the tagged file (cover and chapter
    # streams beside the audio do not confuse it).
    verify_output(out, fmt, probe_source(tone))

    assert report.chapters == 3
    assert report.fields == (
        "title", "artist", "album", "date", "episode_number", "description", "cover",
    )  # fmt: skip
    assert ("ffmpeg" in report.written_by) == (fmt.extension == "m4a")


@pytest.mark.parametrize("name", ["mp3_64", "aac_128", "opus_64", "flac", "wav"])
def test_tagging_again_replaces_everything(
    name: str, tone: Path, cover_jpeg: Path, tmp_path: Path
) -> None:
    """A second write leaves only the second payload: no old title, chapter or cover."""
    fmt = get_format(name)
    out = encoded(tone, fmt, tmp_path)
    write_tags(out, fmt, metadata(check_cover(cover_jpeg.read_bytes())), CHAPTERS)

    write_tags(out, fmt, EpisodeMetadata(title="Second take"), [Chapter(0.5, "Only one")])

    probed = ffprobe_json(out)
    tags = all_tags(probed)
    assert tags["title"] == "Second take"
    assert not {"artist", "album", "date", "track", "comment", "description"} & set(tags)
    # An MP4 chapter track has no gap before its first sample, so ffmpeg (like Apple's
    # players) reads a first chapter that starts late as starting at 0 (media.tags says so).
    start = 0.0 if fmt.extension == "m4a" else 0.5
    assert [(float(c["start_time"]), c["tags"]["title"]) for c in probed["chapters"]] == [
        (start, "Only one")
    ]
    assert [s["codec_type"] for s in probed["streams"] if s["codec_type"] != "data"] == ["audio"]
    assert decodes_cleanly(out)


def test_source_tags_chapters_and_cover_never_reach_an_output(
    make_audio: MakeAudio, cover_png: Path, tmp_path: Path
) -> None:
    """Privacy as before issue 12: the upload's own metadata stays behind; only the
    payload's is written."""
    meta = tmp_path / "source.ffmeta"
    meta.write_text(
        ";FFMETADATA1\ntitle=Secret working title\ncomment=call me on 555-0100\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1500\ntitle=Private chapter\n"
    )
    source = make_audio(
        "private-source.mp3",
        "-f", "lavfi", "-i", "sine=duration=3", "-i", str(cover_png), "-i", str(meta),
        "-map", "0:a", "-map", "1:v", "-map_metadata", "2", "-map_chapters", "2",
        "-c:a", "libmp3lame", "-c:v", "png", "-disposition:v", "attached_pic",
        "-id3v2_version", "3",
    )  # fmt: skip
    assert all_tags(ffprobe_json(source))["title"] == "Secret working title"  # the premise
    for name in ("mp3_128", "aac_128", "opus_64", "flac", "wav"):
        fmt = get_format(name)
        out = encoded(source, fmt, tmp_path)
        write_tags(out, fmt, EpisodeMetadata(title="Public title"), [Chapter(1.0, "Public")])
        probed = ffprobe_json(out)
        assert all_tags(probed).get("title") == "Public title"
        assert [c["tags"]["title"] for c in probed["chapters"]] == ["Public"]
        assert not [s for s in probed["streams"] if s["disposition"].get("attached_pic")]
        raw = out.read_bytes()
        assert b"Secret" not in raw and b"555-0100" not in raw and b"Private" not in raw


def test_nothing_to_write_leaves_the_file_alone(tone: Path, tmp_path: Path) -> None:
    fmt = get_format("mp3_128")
    out = encoded(tone, fmt, tmp_path)
    before = out.read_bytes()
    report = write_tags(out, fmt, None, [])
    assert out.read_bytes() == before
    assert report.skipped == "nothing to write"


@pytest.mark.parametrize("name", ["mp3_128", "aac_128", "opus_64"])
def test_bad_chapters_are_refused_before_the_file_is_touched(
    name: str, tone: Path, tmp_path: Path
) -> None:
    fmt = get_format(name)
    out = encoded(tone, fmt, tmp_path)
    before = out.read_bytes()
    with pytest.raises(ChapterError, match=r"chapter 2: startTime 9\.0 is not within the audio"):
        write_tags(out, fmt, EpisodeMetadata(title="x"), [Chapter(0, "a"), Chapter(9.0, "b")])
    with pytest.raises(ChapterError, match="must be sorted"):
        write_tags(out, fmt, None, [Chapter(2, "a"), Chapter(1, "b")])
    assert out.read_bytes() == before


# --- cover art ------------------------------------------------------------------------------


def ffprobe_size(image: Path) -> tuple[int, int]:
    stream = ffprobe_json(image)["streams"][0]
    return stream["width"], stream["height"]


def test_cover_sizes_match_ffprobe(cover_jpeg: Path, cover_png: Path) -> None:
    jpeg = check_cover(cover_jpeg.read_bytes(), declared_type="image/jpeg")
    png = check_cover(cover_png.read_bytes(), declared_type="image/png")
    assert (jpeg.mime, jpeg.width, jpeg.height) == ("image/jpeg", *ffprobe_size(cover_jpeg))
    assert (png.mime, png.width, png.height) == ("image/png", *ffprobe_size(cover_png))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", r"empty \(0 bytes\)"),
        (b"These are my show notes.\n" * 10, "must be a JPEG or PNG image; it is text"),
        (b"GIF89a\x01\x00\x01\x00" + bytes(30), "must be a JPEG or PNG image; it is a GIF"),
        (b"%PDF-1.7\n" + bytes(40), "it is a PDF document"),
        (bytes(range(256)) * 4, "it is not an image audioflow recognises"),
    ],
    ids=["empty", "text", "gif", "pdf", "binary"],
)
def test_cover_that_is_not_an_image(data: bytes, reason: str) -> None:
    with pytest.raises(CoverArtError, match=reason):
        check_cover(data)


def test_cover_made_by_ffmpeg_as_gif_or_webp_is_refused(make_audio: MakeAudio) -> None:
    gif = make_audio("cover.gif", "-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1")
    with pytest.raises(CoverArtError, match="it is a GIF image"):
        check_cover(gif.read_bytes())


def test_cover_too_many_bytes(cover_jpeg: Path) -> None:
    data = cover_jpeg.read_bytes()
    with pytest.raises(CoverArtError, match=r"the cover is \d+ KiB; the limit is 1 KiB"):
        check_cover(data, max_bytes=1024)
    assert check_cover(data, max_bytes=len(data)).width == 160


def test_cover_too_many_pixels(cover_png: Path, make_audio: MakeAudio) -> None:
    with pytest.raises(CoverArtError, match=r"96x64 px; at most 80x80 px"):
        check_cover(cover_png.read_bytes(), max_pixels=80)
    tall = make_audio("tall.png", "-f", "lavfi", "-i", "testsrc=size=32x3001", "-frames:v", "1")
    with pytest.raises(CoverArtError, match=r"32x3001 px; at most 3000x3000 px"):
        check_cover(tall.read_bytes())


def test_png_claimed_as_jpeg_and_the_reverse(cover_png: Path, cover_jpeg: Path) -> None:
    with pytest.raises(CoverArtError, match="declared 'image/jpeg' but its bytes are a PNG"):
        check_cover(cover_png.read_bytes(), declared_type="image/jpeg")
    with pytest.raises(CoverArtError, match="declared 'image/png' but its bytes are a JPEG"):
        check_cover(cover_jpeg.read_bytes(), declared_type="image/png")
    # The usual spellings of the right type are fine.
    assert check_cover(cover_jpeg.read_bytes(), declared_type="image/jpg").mime == "image/jpeg"
    assert check_cover(cover_png.read_bytes(), declared_type="image/png; q=1").mime == "image/png"


def test_truncated_or_damaged_images(cover_png: Path, cover_jpeg: Path) -> None:
    png = cover_png.read_bytes()
    jpeg = cover_jpeg.read_bytes()
    with pytest.raises(CoverArtError, match="truncated PNG"):
        check_cover(png[:20])
    damaged = bytearray(png)
    damaged[20] ^= 0xFF  # inside IHDR: the checksum no longer matches
    with pytest.raises(CoverArtError, match="IHDR checksum mismatch"):
        check_cover(bytes(damaged))
    with pytest.raises(CoverArtError, match="truncated JPEG"):
        check_cover(jpeg[:12])
    with pytest.raises(CoverArtError, match="damaged JPEG"):
        check_cover(b"\xff\xd8\xff\xda\x00\x08" + bytes(64))  # scan data before any frame


# --- the metadata model ---------------------------------------------------------------------


def test_metadata_is_checked_with_reasons() -> None:
    checked = EpisodeMetadata.checked(title="  Padded  ", date="2026-01-31", episode_number=0)
    assert (checked.title, checked.date, checked.episode_number) == (
        "Padded", dt.date(2026, 1, 31), 0,
    )  # fmt: skip
    with pytest.raises(MetadataError, match="not a YYYY-MM-DD date"):
        EpisodeMetadata.checked(date="31/01/2026")
    with pytest.raises(MetadataError, match="title contains a control character"):
        EpisodeMetadata.checked(title="two\nlines")
    with pytest.raises(MetadataError, match="artist is empty"):
        EpisodeMetadata.checked(artist="   ")
    with pytest.raises(MetadataError, match="episodeNumber"):
        EpisodeMetadata.checked(episode_number=-1)
    with pytest.raises(MetadataError, match="episodeNumber"):
        EpisodeMetadata.checked(episode_number=True)
    assert EpisodeMetadata.checked(description="a\n\tb").description == "a\n\tb"
    assert EpisodeMetadata().is_empty()
