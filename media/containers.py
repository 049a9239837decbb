"""The one list of input containers (ffmpeg demuxers) audioflow lets ffmpeg open.

Why an allow-list: ffmpeg picks a demuxer by sniffing the content, and some demuxers read
*other* resources named inside the file: an HLS playlist (`hls`) or an ffconcat list
(`concat`) opens the files it names, `image2` expands a file name pattern, `sdp`/`rtp`
open network streams, `webm_dash_manifest` opens the segments it lists. An 84-byte
playlist naming a file on the worker's disk was accepted as audio and published that
file. `-protocol_whitelist file` alone cannot stop it: the second file is a file too. So
every ffprobe/ffmpeg run on user-supplied data gets `input_args()`:

* `-format_whitelist` with the demuxers below, each of which reads only the one file it
  was given (a refused demuxer fails with "Format not on whitelist"; the whitelist also
  applies to anything a demuxer would try to open in turn);
* `-protocol_whitelist file`: the input is always a local `file:` URL (`media_url`), and
  no allowed demuxer needs another protocol (each has a test file that probes, decodes
  and encodes under both whitelists; `-progress pipe:1` and the output are not inputs,
  so the whitelist does not apply to them).
  The `mov` demuxer follows an MP4's external data references (`dref` aliases) only with
  `-enable_drefs 1`, which we never pass (verified: with it, a crafted M4A plays another
  file's audio even under both whitelists; without it ffmpeg warns "Skipped opening
  external track", which `refused_demuxer` turns into a refusal).

A name in the list matches an ffmpeg demuxer whose comma-separated name contains it
(`mov` is ffmpeg's `mov,mp4,m4a,3gp,3g2,mj2`, `matroska` its `matroska,webm`), which is
also what ffprobe reports as `format_name`.
"""

from __future__ import annotations

import re

__all__ = [
    "ALLOWED_DEMUXERS",
    "format_whitelist",
    "input_args",
    "refused_demuxer",
    "what_it_is",
]

#: Accepted input demuxers (ffmpeg's names) and what they read, for the README and errors.
ALLOWED_DEMUXERS: dict[str, str] = {
    "mp3": "MP3 (and MP2)",
    "aac": "raw AAC (ADTS)",
    "wav": "WAV, RF64",
    "w64": "Sony Wave64",
    "aiff": "AIFF, AIFF-C",
    "caf": "Apple Core Audio Format",
    "flac": "FLAC",
    "ogg": "Ogg (Vorbis, Opus, FLAC)",
    "mov": "MP4, M4A, MOV, 3GP",
    "matroska": "Matroska, WebM (MKV, MKA)",
    "asf": "WMA, WMV",
    "au": "Sun AU",
    "wv": "WavPack",
    "ac3": "raw AC-3",
    "eac3": "raw E-AC-3",
    "amr": "AMR",
    "mpegts": "MPEG transport stream (.ts)",
    "flv": "Flash video",
    "avi": "AVI",
}

#: What some refused demuxers are, in words a person who uploaded one understands.
_REFUSED: dict[str, str] = {
    "hls": "an HLS playlist (it names other files); playlists and file lists are not accepted",
    "concat": "an ffconcat file list; playlists and file lists are not accepted",
    "webm_dash_manifest": "a DASH manifest (it names other files); playlists are not accepted",
    "dash": "a DASH manifest (it names other files); playlists are not accepted",
    "sdp": "an SDP session description (it opens network streams), not an audio file",
    "rtp": "an RTP stream description, not an audio file",
    "rtsp": "an RTSP stream description, not an audio file",
    "image2": "an image or image sequence, not an audio file",
    "tty": "a text file, not an audio file",
    "ffmetadata": "an ffmpeg metadata text file, not an audio file",
    "mov-external-reference": (
        "an MP4/MOV whose audio is in another file (an external data reference); "
        "only self-contained files are accepted"
    ),
}

#: ffmpeg's refusal: `[hls @ 0x55d5c92685c0] Format not on whitelist 'mp3,...'`.
_NOT_ON_WHITELIST = re.compile(r"\[([^\]@]+?) @ 0x[0-9a-f]+\] Format not on whitelist")
#: The mov demuxer's warning for a track whose samples live in another file.
_EXTERNAL_TRACK = "Skipped opening external track"


def format_whitelist() -> str:
    """The `-format_whitelist` value: the allowed demuxers, comma-separated."""
    return ",".join(ALLOWED_DEMUXERS)


def input_args() -> list[str]:
    """Options to put before `-i` on every ffmpeg/ffprobe run that reads user data."""
    return ["-format_whitelist", format_whitelist(), "-protocol_whitelist", "file"]


def refused_demuxer(stderr: str) -> str | None:
    """The demuxer ffmpeg found but the whitelist refused, from its stderr; else None.

    An MP4/MOV whose track refers to another file (which ffmpeg did not open) counts as
    refused too, as the pseudo-demuxer `mov-external-reference`.
    """
    found = _NOT_ON_WHITELIST.search(stderr)
    if found:
        return found.group(1).strip()
    return "mov-external-reference" if _EXTERNAL_TRACK in stderr else None


def what_it_is(demuxer: str) -> str:
    """A refused demuxer in plain words, e.g. `an HLS playlist (...)`."""
    if demuxer in _REFUSED:
        return _REFUSED[demuxer]
    if demuxer.endswith("_pipe"):  # png_pipe, jpeg_pipe, ...: single images
        return "an image, not an audio file"
    return f"a {demuxer!r} file, which is not one of the accepted audio containers"
