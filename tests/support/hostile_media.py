"""Hostile inputs: small files that make an unrestricted ffmpeg open *other* resources.

Each builder writes one file into a folder and returns its path. `target` is a real audio
file on the same disk (the "secret" the attacker wants published); the files name it by
absolute path, by a path relative to themselves, or repeat it many times.

Without a demuxer allow-list ffprobe reports the HLS playlist as `hls`, ten seconds of
audio, and ffmpeg encodes the target's audio from it (the case of issue 10).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.audio_files import ffmpeg

HostileBuilder = Callable[[Path, Path], Path]


def hls_absolute(folder: Path, target: Path) -> Path:
    """The report's case: an 84-byte HLS playlist naming an MP3 on the worker's disk."""
    path = folder / "episode.m3u8"
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target}\n#EXT-X-ENDLIST\n")
    return path


def hls_relative(folder: Path, target: Path) -> Path:
    """An HLS playlist naming a file next to it (no absolute path to filter)."""
    path = folder / "relative.m3u8"
    path.write_text(
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{target.name}\n#EXT-X-ENDLIST\n"
    )
    return path


def hls_repeated(folder: Path, target: Path) -> Path:
    """A few KB of playlist repeating one file: hours of audio to decode."""
    path = folder / "repeat.m3u8"
    entries = f"#EXTINF:10,\n{target}\n" * 300
    path.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n{entries}#EXT-X-ENDLIST\n")
    return path


def ffconcat(folder: Path, target: Path) -> Path:
    """An ffconcat list naming a neighbour twice (relative names are 'safe' to concat)."""
    path = folder / "list.ffconcat"
    path.write_text(f"ffconcat version 1.0\nfile {target.name}\nfile {target.name}\n")
    return path


def sdp(folder: Path, target: Path) -> Path:
    """An SDP description: ffmpeg would listen for RTP on a local port."""
    path = folder / "stream.sdp"
    path.write_text(
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=audioflow\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=audio 45678 RTP/AVP 14\na=rtpmap:14 MPA/90000\n"
    )
    return path


def dash_manifest(folder: Path, target: Path) -> Path:
    """A WebM DASH manifest naming a neighbour as its segment."""
    path = folder / "manifest.mpd"
    path.write_text(
        '<?xml version="1.0"?>\n'
        '<MPD xmlns="urn:mpeg:DASH:schema:MPD:2011" type="static" '
        'mediaPresentationDuration="PT10S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
        '<Period><AdaptationSet mimeType="audio/webm"><Representation id="1" bandwidth="64000">'
        f"<BaseURL>{target.name}</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    )
    return path


def image_sequence(folder: Path, target: Path) -> Path:
    """A file whose *name* is an image2 pattern, with frames next to it to expand it to."""
    for index in (1, 2, 3):
        ffmpeg(
            "-f", "lavfi", "-i", "testsrc=size=32x32", "-frames:v", "1",
            str(folder / f"frame{index:03d}.png"),
        )  # fmt: skip
    path = folder / "frame%03d.png"
    path.write_bytes((folder / "frame001.png").read_bytes())
    return path


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, bytes]]:
    """(offset, size, type) of the ISO-BMFF boxes between `start` and `end`."""
    offset = start
    while offset < end:
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        yield offset, size, kind
        offset += size


def _alias_entry(path: str) -> bytes:
    """A QuickTime `alis` data reference to `path` (the layout ffmpeg's mov.c reads):
    volume, file name, one level up/down, then an absolute-path record (type 2)."""
    name = Path(path).name.encode()
    raw = path.encode()
    padded = raw + b"\0" * (len(raw) & 1)
    body = (
        b"\0" * 10 + b"\0" + b"\0" * 27 + b"\0" * 12
        + bytes([len(name)]) + name.ljust(63, b"\0") + b"\0" * 16
        + struct.pack(">hh", 1, 1) + b"\0" * 16
        + struct.pack(">hH", 2, len(raw)) + padded + struct.pack(">hH", -1, 0)
    )  # fmt: skip
    return struct.pack(">I4sI", 12 + len(body), b"alis", 0) + body


def mp4_external_reference(folder: Path, target: Path) -> Path:
    """An M4A whose audio track's data reference points at another M4A on the disk.

    Made from an M4A copy of `target` (moov after mdat, so sample offsets stay valid):
    its `dref` becomes an alias of that copy and its own samples are zeroed, so whatever
    audio comes out was read from the other file (`ffmpeg -enable_drefs 1` does).
    """
    referenced = folder / "referenced.m4a"
    ffmpeg("-i", str(target), "-c:a", "aac", str(referenced))
    data = referenced.read_bytes()
    chain: list[tuple[int, int]] = []
    start, end = 0, len(data)
    for wanted in (b"moov", b"trak", b"mdia", b"minf", b"dinf", b"dref"):
        offset, size = next((o, n) for o, n, kind in _boxes(data, start, end) if kind == wanted)
        chain.append((offset, size))
        start, end = offset + 8, offset + size
    mdat_offset, mdat_size = next((o, n) for o, n, k in _boxes(data, 0, len(data)) if k == b"mdat")
    assert mdat_offset < chain[0][0], "moov must follow mdat"
    entry = _alias_entry(str(referenced))
    dref = struct.pack(">I4sII", 16 + len(entry), b"dref", 0, 1) + entry
    dref_offset, dref_size = chain[-1]
    grown = len(dref) - dref_size
    out = bytearray(data[:dref_offset] + dref + data[dref_offset + dref_size :])
    for offset, size in chain[:-1]:
        out[offset : offset + 4] = struct.pack(">I", size + grown)
    out[mdat_offset + 8 : mdat_offset + mdat_size] = bytes(mdat_size - 8)
    path = folder / "external.m4a"
    path.write_bytes(bytes(out))
    return path


def text_notes(folder: Path, target: Path) -> Path:
    """Show notes as a .txt file (ffmpeg has a text demuxer for those)."""
    path = folder / "notes.txt"
    path.write_text("Show notes: in this episode we talk about audio.\n" * 30)
    return path


#: Every hostile file, by a short name, and a phrase its refusal must contain.
HOSTILE: dict[str, tuple[HostileBuilder, str]] = {
    "hls-absolute": (hls_absolute, "HLS playlist"),
    "hls-relative": (hls_relative, "HLS playlist"),
    "hls-repeated": (hls_repeated, "HLS playlist"),
    "ffconcat": (ffconcat, "file list"),
    "sdp": (sdp, "SDP"),
    "dash-manifest": (dash_manifest, "DASH manifest"),
    "image-sequence": (image_sequence, "image"),
    "text": (text_notes, "not an audio"),
    "mp4-external-reference": (mp4_external_reference, "another file"),
}


def lying_mp3(folder: Path, seconds: float = 12.0, claimed_s: float = 2.0) -> Path:
    """A VBR MP3 of `seconds` whose Xing header claims about `claimed_s` instead.

    The frame count in the Xing header is rewritten (the byte count is left true, so
    ffmpeg's "concatenated file" check does not fall back to estimating): ffprobe reports
    `claimed_s`, and the `seconds` of frames still decode. Under-claiming hides a long
    file from a header check; over-claiming makes a few KB look like hours.
    """
    honest = folder / f"honest-{seconds:g}.mp3"
    ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
        "-c:a", "libmp3lame", "-q:a", "4", "-id3v2_version", "0", str(honest),
    )  # fmt: skip
    data = bytearray(honest.read_bytes())
    tag = data.find(b"Xing")
    assert tag >= 0, "libmp3lame wrote no Xing header"
    (flags,) = struct.unpack(">I", data[tag + 4 : tag + 8])
    assert flags & 1, "the Xing header has no frame count"
    (frames,) = struct.unpack(">I", data[tag + 8 : tag + 12])
    data[tag + 8 : tag + 12] = struct.pack(">I", max(1, int(frames * claimed_s / seconds)))
    path = folder / f"lying-{claimed_s:g}-of-{seconds:g}.mp3"
    path.write_bytes(bytes(data))
    return path
