"""Writing episode metadata, cover art and chapters into an encoded output.

The encode stays as it is: `media.encode` maps no source tags or chapters
(`-map_metadata -1 -map_chapters -1`, so nothing private in an upload reaches the outputs).
`write_tags` then writes only what the payload says, into the finished file, and removes
any tag already there (ffmpeg's own `encoder` tag included) so the result is exactly the
payload's metadata.

Which tool writes what, and why:

* MP3 (`mp3_*`): mutagen, ID3v2.4 (TIT2 TPE1 TALB TDRC TRCK, COMM for the description,
  APIC front cover); chapters as ID3 CHAP frames (TIT2, WXXX url) under an ordered,
  top-level CTOC.
* AAC/M4A (`aac_128`): mutagen, MP4 atoms (©nam ©ART ©alb ©day trkn, `desc` with the first
  255 characters and `ldes` with all of the description, `covr`); chapters by ffmpeg, a
  stream copy from an FFMETADATA file (a QuickTime chapter track plus Nero `chpl`).
* Opus (`opus_64`): mutagen, Vorbis comments (TITLE ARTIST ALBUM DATE TRACKNUMBER
  DESCRIPTION, METADATA_BLOCK_PICTURE); chapters as `CHAPTERxxx=HH:MM:SS.mmm`,
  `CHAPTERxxxNAME` and `CHAPTERxxxURL` comments.
* FLAC (`flac`): mutagen, Vorbis comments and chapters as for Opus, the cover as a FLAC
  PICTURE block.
* WAV (`wav`): mutagen, an ID3v2.4 `id3 ` chunk with the MP3 frames and chapters.

ffmpeg 5.1 writes chapters to MP3, M4A and Opus but not FLAC, and cannot put cover art into
Opus; its Opus chapter times are wrong too (it rounds the seconds, then adds the
milliseconds: a chapter at 2.5 s is written `00:00:03.500`, measured). mutagen cannot write
MP4 chapters. So mutagen writes everything it can (one library,
one behaviour for every format), and ffmpeg only adds the M4A chapters, by a stream copy
(no re-encode: about as fast as copying the file) made before mutagen writes the atoms.
An MP4 chapter track has no gap before its first sample: a first chapter that starts after
0 s is read from 0 s by ffmpeg (and Apple's players); the Nero `chpl` atom keeps the exact
time. An RF64 WAV (over 4 GiB) cannot be tagged by mutagen (its RIFF reader wants a `RIFF`
root): it is left untagged and the report says so. ffprobe reads all of the above back;
the tests check each output with it, never with this module.

The file is changed in place (mutagen rewrites it when the new tags do not fit in the
padding); a failure raises TagWriteError and the file must then be thrown away, as a failed
encode's would be (so the flow should tag an output before it verifies and uploads it).
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mutagen import MutagenError
from mutagen.flac import FLAC, Picture, VCFLACDict
from mutagen.id3 import (
    APIC,
    CHAP,
    COMM,
    CTOC,
    ID3,
    TALB,
    TDRC,
    TIT2,
    TPE1,
    TRCK,
    WXXX,
    CTOCFlags,
    Frame,
    PictureType,
)
from mutagen.id3._tags import save_frame
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover
from mutagen.oggopus import OggOpus
from mutagen.wave import WAVE, _WaveFile, _WaveID3

from core.episode_metadata import Chapter, EpisodeMetadata, validate_chapters
from core.formats import AudioFormat
from media import limits
from media.tools import ToolMissingError, ffmpeg, media_url, read_tail

__all__ = ["TAGGED_EXTENSIONS", "TagReport", "TagWriteError", "write_tags"]

log = logging.getLogger(__name__)

#: iTunes shows at most this much of `desc`; the whole description goes into `ldes`.
MP4_SHORT_DESCRIPTION_CHARS = 255
#: ID3 text encoding 3 = UTF-8 (ID3v2.4).
_UTF8 = 3


class TagWriteError(RuntimeError):
    """Tags or chapters could not be written; the output file must be discarded."""


@dataclass(frozen=True)
class TagReport:
    """What `write_tags` wrote into one output, for logs and the task's artifact."""

    format_name: str
    #: Which metadata fields were written (`title`, `artist`, ..., `cover`).
    fields: tuple[str, ...]
    #: How many chapters were written.
    chapters: int
    #: Which tools did it (`mutagen`, `ffmpeg`), or why nothing was written.
    written_by: tuple[str, ...]
    seconds: float
    #: Why the file was left untagged, when it was (e.g. an RF64 WAV); None otherwise.
    skipped: str | None = None


def _fields(metadata: EpisodeMetadata) -> tuple[str, ...]:
    names = ("title", "artist", "album", "date", "episode_number", "description", "cover")
    return tuple(name for name in names if getattr(metadata, name) is not None)


def _end_ms(chapters: Sequence[Chapter], index: int, duration_s: float) -> tuple[int, int]:
    """A chapter's start and end in milliseconds: it ends where the next one starts, the
    last one at the end of the audio (never before its own start)."""
    start = round(chapters[index].start_s * 1000)
    following = chapters[index + 1].start_s if index + 1 < len(chapters) else duration_s
    return start, max(start + 1, round(following * 1000))


def _hms(seconds: float) -> str:
    """`HH:MM:SS.mmm`, the only time form ffmpeg reads in Vorbis CHAPTERxxx comments."""
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


# --- ID3 (MP3 and WAV) ----------------------------------------------------------------------


class _InOrder:
    """Writes ID3 frames in the order they were added.

    mutagen sorts frames by size when it saves, which puts CHAP frames out of time order,
    and ffmpeg 5.1 lists ID3 chapters in file order (measured: a 3-chapter MP3 came back
    as 3, 1, 2), so an ffmpeg-based player would show them shuffled. Our tags are always
    built from scratch, so there are no unknown frames to carry over.
    """

    def _write(self, config: object) -> bytearray:
        values = self.values()  # type: ignore[attr-defined]
        return bytearray().join(save_frame(frame, config=config) for frame in values)


class _OrderedID3(_InOrder, ID3):
    """An MP3's ID3v2 tag, frames in insertion order."""


class _OrderedWaveID3(_InOrder, _WaveID3):
    """A WAV's `id3 ` chunk, frames in insertion order."""


def _id3_frames(
    metadata: EpisodeMetadata, chapters: Sequence[Chapter], duration_s: float
) -> list[Frame]:
    frames: list[Frame] = []
    if metadata.title is not None:
        frames.append(TIT2(encoding=_UTF8, text=[metadata.title]))
    if metadata.artist is not None:
        frames.append(TPE1(encoding=_UTF8, text=[metadata.artist]))
    if metadata.album is not None:
        frames.append(TALB(encoding=_UTF8, text=[metadata.album]))
    if metadata.date is not None:
        frames.append(TDRC(encoding=_UTF8, text=[metadata.date.isoformat()]))
    if metadata.episode_number is not None:
        frames.append(TRCK(encoding=_UTF8, text=[str(metadata.episode_number)]))
    if metadata.description is not None:
        frames.append(COMM(encoding=_UTF8, lang="eng", desc="", text=[metadata.description]))
    if metadata.cover is not None:
        frames.append(
            APIC(
                encoding=_UTF8,
                mime=metadata.cover.mime,
                type=PictureType.COVER_FRONT,
                desc="",
                data=metadata.cover.data,
            )
        )
    if chapters:
        ids = [f"chp{number}" for number in range(1, len(chapters) + 1)]
        frames.append(
            CTOC(
                element_id="toc",
                flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
                child_element_ids=ids,
                sub_frames=[],
            )
        )
        for index, (element_id, chapter) in enumerate(zip(ids, chapters, strict=True)):
            start, end = _end_ms(chapters, index, duration_s)
            sub: list[Frame] = [TIT2(encoding=_UTF8, text=[chapter.title])]
            if chapter.url is not None:
                sub.append(WXXX(encoding=_UTF8, desc="chapter url", url=chapter.url))
            frames.append(
                CHAP(
                    element_id=element_id,
                    start_time=start,
                    end_time=end,
                    start_offset=0xFFFFFFFF,  # "not set": players use the times
                    end_offset=0xFFFFFFFF,
                    sub_frames=sub,
                )
            )
    return frames


def _write_mp3(
    path: Path, metadata: EpisodeMetadata, chapters: Sequence[Chapter], duration_s: float
) -> tuple[str, ...]:
    tags = _OrderedID3()  # a fresh tag replaces the whole ID3v2 tag (ffmpeg's TSSE included)
    for frame in _id3_frames(metadata, chapters, duration_s):
        tags.add(frame)
    tags.save(path, v1=0, v2_version=4)  # v1=0: and any ID3v1 tag is removed
    return ("mutagen",)


def _write_wav(
    path: Path, metadata: EpisodeMetadata, chapters: Sequence[Chapter], duration_s: float
) -> tuple[str, ...]:
    # ffmpeg's wav muxer writes a LIST/INFO chunk (its `encoder`), and ffmpeg's wav demuxer
    # then ignores the ID3 chunk's text frames ("more suitable tags were found"): both the
    # old ID3 chunk and every LIST chunk go, so the payload's tags are the only ones.
    with path.open("r+b") as fileobj:
        riff = _WaveFile(fileobj)
        for chunk_id in ("LIST", "id3"):
            while chunk_id in riff:
                riff.delete_chunk(chunk_id)
    tags = _OrderedWaveID3()
    for frame in _id3_frames(metadata, chapters, duration_s):
        tags.add(frame)
    tags.save(path, v2_version=4)
    return ("mutagen",)


# --- MP4 (AAC in .m4a) ----------------------------------------------------------------------


def _ffmetadata_escape(text: str) -> str:
    """FFMETADATA values escape `=`, `;`, `#`, `\\` and newlines with a backslash."""
    out = []
    for char in text:
        if char in "=;#\\\n":
            out.append("\\")
        out.append(char)
    return "".join(out)


def _mp4_chapters(path: Path, chapters: Sequence[Chapter], duration_s: float) -> None:
    """Add `chapters` to the M4A at `path` with an ffmpeg stream copy (no re-encode).

    `-map_metadata 1` takes the global metadata from the FFMETADATA file, which has none:
    `-map_metadata -1` would also drop the chapters' titles (measured with ffmpeg 5.1).
    """
    lines = [";FFMETADATA1"]
    for index, chapter in enumerate(chapters):
        start, end = _end_ms(chapters, index, duration_s)
        lines += [
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={start}",
            f"END={end}",
            f"title={_ffmetadata_escape(chapter.title)}",
        ]
    folder = path.parent
    with (
        tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=folder, prefix=f".{path.name}.", suffix=".ffmeta"
        ) as meta,
        tempfile.TemporaryFile() as errlog,
    ):
        meta.write("\n".join(lines) + "\n")
        meta.flush()
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        cmd = [
            ffmpeg(), "-nostdin", "-hide_banner", "-v", "error", "-y",
            "-format_whitelist", "mov", "-protocol_whitelist", "file", "-i", media_url(path),
            "-protocol_whitelist", "file", "-f", "ffmetadata", "-i", media_url(Path(meta.name)),
            "-map", "0:a:0", "-map_metadata", "1", "-map_chapters", "1", "-c", "copy",
            "-movflags", "+faststart", "-f", "ipod", media_url(tmp),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errlog,
                timeout=limits.encode_timeout_s(duration_s),
                check=False,
            )
            if done.returncode != 0:
                raise TagWriteError(
                    f"ffmpeg could not add chapters to {path.name}: "
                    f"{read_tail(errlog, max_lines=3) or 'no message'}"
                )
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except FileNotFoundError as exc:
            raise ToolMissingError(f"could not start ffmpeg: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TagWriteError(f"adding chapters to {path.name} took too long") from exc
        finally:
            tmp.unlink(missing_ok=True)


def _write_m4a(
    path: Path, metadata: EpisodeMetadata, chapters: Sequence[Chapter], duration_s: float
) -> tuple[str, ...]:
    tools: tuple[str, ...] = ("mutagen",)
    if chapters:
        _mp4_chapters(path, chapters, duration_s)
        tools = ("ffmpeg", "mutagen")
    mp4 = MP4(path)
    if mp4.tags is None:
        mp4.add_tags()
    assert mp4.tags is not None
    mp4.tags.clear()  # ffmpeg's ©too (encoder) and anything else: only the payload remains
    if metadata.title is not None:
        mp4.tags["\xa9nam"] = [metadata.title]
    if metadata.artist is not None:
        mp4.tags["\xa9ART"] = [metadata.artist]
    if metadata.album is not None:
        mp4.tags["\xa9alb"] = [metadata.album]
    if metadata.date is not None:
        mp4.tags["\xa9day"] = [metadata.date.isoformat()]
    if metadata.episode_number is not None:
        mp4.tags["trkn"] = [(metadata.episode_number, 0)]
    if metadata.description is not None:
        mp4.tags["desc"] = [metadata.description[:MP4_SHORT_DESCRIPTION_CHARS]]
        mp4.tags["ldes"] = [metadata.description]
    if metadata.cover is not None:
        kind = MP4Cover.FORMAT_PNG if metadata.cover.mime == "image/png" else MP4Cover.FORMAT_JPEG
        mp4.tags["covr"] = [MP4Cover(metadata.cover.data, imageformat=kind)]
    mp4.save()
    return tools


# --- Vorbis comments (Opus and FLAC) --------------------------------------------------------


def _flac_picture(metadata: EpisodeMetadata) -> Picture | None:
    """The cover as a FLAC PICTURE block (also the payload of Opus METADATA_BLOCK_PICTURE)."""
    cover = metadata.cover
    if cover is None:
        return None
    picture = Picture()
    picture.type = PictureType.COVER_FRONT
    picture.mime = cover.mime
    picture.desc = ""
    picture.width = cover.width
    picture.height = cover.height
    picture.depth = 24
    picture.data = cover.data
    return picture


def _vorbis_comments(
    metadata: EpisodeMetadata, chapters: Sequence[Chapter]
) -> list[tuple[str, str]]:
    comments: list[tuple[str, str]] = []
    if metadata.title is not None:
        comments.append(("TITLE", metadata.title))
    if metadata.artist is not None:
        comments.append(("ARTIST", metadata.artist))
    if metadata.album is not None:
        comments.append(("ALBUM", metadata.album))
    if metadata.date is not None:
        comments.append(("DATE", metadata.date.isoformat()))
    if metadata.episode_number is not None:
        comments.append(("TRACKNUMBER", str(metadata.episode_number)))
    if metadata.description is not None:
        comments.append(("DESCRIPTION", metadata.description))
    for number, chapter in enumerate(chapters, start=1):
        key = f"CHAPTER{number:03d}"
        comments.append((key, _hms(chapter.start_s)))
        comments.append((f"{key}NAME", chapter.title))
        if chapter.url is not None:
            comments.append((f"{key}URL", chapter.url))
    return comments


def _write_opus(
    path: Path, metadata: EpisodeMetadata, chapters: Sequence[Chapter], duration_s: float
) -> tuple[str, ...]:
    opus = OggOpus(path)
    if opus.tags is None:  # pragma: no cover - an Opus stream always has OpusTags
        raise TagWriteError(f"{path.name} has no OpusTags header")
    opus.tags.clear()
    comments = _vorbis_comments(metadata, chapters)
    picture = _flac_picture(metadata)
    if picture is not None:
        comments.append(
            ("METADATA_BLOCK_PICTURE", base64.b64encode(picture.write()).decode("ascii"))
        )
    opus.tags.extend(comments)
    opus.save()
    return ("mutagen",)


def _write_flac(
    path: Path, metadata: EpisodeMetadata, chapters: Sequence[Chapter], duration_s: float
) -> tuple[str, ...]:
    flac = FLAC(path)
    flac.clear_pictures()
    if flac.tags is None:
        flac.add_tags()
    comments = flac.tags
    assert isinstance(comments, VCFLACDict)
    comments.clear()
    comments.extend(_vorbis_comments(metadata, chapters))
    picture = _flac_picture(metadata)
    if picture is not None:
        flac.add_picture(picture)
    flac.save()
    return ("mutagen",)


_Writer = Callable[[Path, EpisodeMetadata, Sequence[Chapter], float], tuple[str, ...]]

#: One writer per output extension (the container decides how tags are stored).
_WRITERS: dict[str, _Writer] = {
    "mp3": _write_mp3,
    "m4a": _write_m4a,
    "opus": _write_opus,
    "flac": _write_flac,
    "wav": _write_wav,
}

#: How each container's length is read when the caller does not give it (headers only).
_LENGTH_READERS: dict[str, type[MP3] | type[MP4] | type[OggOpus] | type[FLAC] | type[WAVE]] = {
    "mp3": MP3,
    "m4a": MP4,
    "opus": OggOpus,
    "flac": FLAC,
    "wav": WAVE,
}

#: Output extensions `write_tags` can tag.
TAGGED_EXTENSIONS = frozenset(_WRITERS)


def write_tags(
    path: Path,
    fmt: AudioFormat,
    metadata: EpisodeMetadata | None,
    chapters: Sequence[Chapter] = (),
    *,
    duration_s: float | None = None,
) -> TagReport:
    """Write `metadata` (cover included) and `chapters` into the `fmt` output at `path`.

    Existing tags are removed first, so the file carries the payload's metadata and
    nothing else. `duration_s` (the output's length) ends the last chapter; by default it
    is read from the file's header. Chapters are checked with `validate_chapters` against
    that length (ChapterError). With no metadata and no chapters the file is not touched.
    Raises TagWriteError when the file cannot be tagged (it must then be discarded) or
    when `fmt` is not a format this module knows.
    """
    path = Path(path)
    began = time.perf_counter()
    metadata = (metadata or EpisodeMetadata()).check()
    writer = _WRITERS.get(fmt.extension)
    if writer is None:
        raise TagWriteError(f"no tag writer for .{fmt.extension} outputs ({fmt.name})")
    if metadata.is_empty() and not chapters:
        return TagReport(fmt.name, (), 0, (), time.perf_counter() - began, "nothing to write")
    if fmt.extension == "wav":
        with path.open("rb") as head:
            if head.read(4) == b"RF64":
                log.warning("%s is an RF64 WAV: mutagen cannot tag it; left untagged", path.name)
                return TagReport(
                    fmt.name, (), 0, (), time.perf_counter() - began, "RF64 WAV (over 4 GiB)"
                )
    try:
        if duration_s is None:
            info = _LENGTH_READERS[fmt.extension](path).info
            if info is None:
                raise TagWriteError(f"{path.name}: mutagen found no audio stream information")
            duration_s = float(info.length)
        chapters = validate_chapters(chapters, duration_s)
        tools = writer(path, metadata, chapters, duration_s)
    except (MutagenError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) and not path.exists():
            raise
        raise TagWriteError(f"could not write tags into {path.name} ({fmt.name}): {exc}") from exc
    report = TagReport(
        format_name=fmt.name,
        fields=_fields(metadata),
        chapters=len(chapters),
        written_by=tools,
        seconds=time.perf_counter() - began,
    )
    log.info(
        "tagged %s: %s, %d chapters, by %s in %.3f s",
        path.name,
        ", ".join(report.fields) or "no fields",
        report.chapters,
        "+".join(tools),
        report.seconds,
    )
    return report
