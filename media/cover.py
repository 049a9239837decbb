"""Checking cover art before it is written into every output: a real JPEG or PNG, not too big.

Why: the cover comes from the object store, put there by a client. Whatever bytes it holds
would be copied into every rendition (ID3 APIC, MP4 `covr`, FLAC PICTURE, Opus
METADATA_BLOCK_PICTURE) and served to every listener, and players only show JPEG and PNG
(Apple Podcasts asks for one of them, 1400-3000 px square). So the bytes are identified by
their own signature, never by a file name or a claimed MIME type, and the image header is
decoded for its width and height:

* JPEG: starts `FF D8 FF`; the frame header (SOF0-SOF15 except DHT/JPG/DAC) gives the size.
* PNG: the 8-byte signature, then the IHDR chunk (checked against its CRC) gives the size.

Only the headers are read (microseconds, no image library): that is enough to refuse a
text file, a GIF or WebP, a truncated upload and an oversize picture, each with a message
naming why. A caller that declares a type (the store's Content-Type) is refused when the
bytes say otherwise: a PNG stored as `image/jpeg` would be written with the wrong MIME.
"""

from __future__ import annotations

import struct
import zlib

from core.episode_metadata import CoverArt

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "CoverArtError",
    "check_cover",
    "image_type",
]

#: Largest cover accepted by default: it is copied into every rendition of the episode.
DEFAULT_MAX_BYTES = 512 * 1024
#: Largest width or height accepted by default (Apple Podcasts' maximum).
DEFAULT_MAX_PIXELS = 3000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
#: JPEG start-of-frame markers: C0-CF without C4 (DHT), C8 (JPG) and CC (DAC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field (TEM, RST0-7, SOI).
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})
#: Signatures of other things people upload as covers, to say what was found instead.
_OTHER_SIGNATURES = (
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"RIFF", "a RIFF file (WebP or WAV)"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML (perhaps SVG) document"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
)


class CoverArtError(ValueError):
    """The cover cannot be used; the message says why in words a producer understands."""


def image_type(data: bytes) -> str | None:
    """`image/jpeg` or `image/png` from the bytes' signature; None for anything else."""
    if data.startswith(_PNG_SIGNATURE):
        return "image/png"
    if data.startswith(_JPEG_SOI):
        return "image/jpeg"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (which must come first, with a valid CRC)."""
    header = data[8 : 8 + 25]
    if len(header) < 25:
        raise CoverArtError("the cover is a truncated PNG (no complete IHDR header)")
    length, kind = struct.unpack(">I4s", header[:8])
    if kind != b"IHDR" or length != 13:
        raise CoverArtError("the cover is a damaged PNG (the first chunk is not IHDR)")
    (crc,) = struct.unpack(">I", header[21:25])
    if zlib.crc32(header[4:21]) != crc:
        raise CoverArtError("the cover is a damaged PNG (IHDR checksum mismatch)")
    width, height = struct.unpack(">II", header[8:16])
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG's frame header, walking the marker segments to it."""
    pos = 2
    size = len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise CoverArtError("the cover is a damaged JPEG (bad marker before the frame header)")
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan: no frame header first
            raise CoverArtError("the cover is a damaged JPEG (no frame header before the image)")
        if pos + 2 > size:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise CoverArtError("the cover is a damaged JPEG (bad segment length)")
        if marker in _SOF_MARKERS:
            if pos + 7 > size:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return width, height
        pos += length
    raise CoverArtError("the cover is a truncated JPEG (it ends before its frame header)")


def _what_it_is(data: bytes) -> str:
    for signature, name in _OTHER_SIGNATURES:
        if data.lstrip()[: len(signature)].lower() == signature.lower():
            return name
    try:
        data[:512].decode("utf-8")
    except UnicodeDecodeError:
        return "not an image audioflow recognises"
    return "text, not an image"


def check_cover(
    data: bytes,
    *,
    declared_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> CoverArt:
    """`data` as `CoverArt` if it is a JPEG or PNG within the limits; else CoverArtError.

    Refused, each with its reason: empty; more than `max_bytes`; not a JPEG or PNG by its
    signature (the message says what it looks like instead); a header that does not decode
    (truncated or damaged); width or height zero or above `max_pixels`; a `declared_type`
    (e.g. the stored object's Content-Type) other than what the bytes are.
    """
    if not data:
        raise CoverArtError("the cover is empty (0 bytes)")
    if len(data) > max_bytes:
        raise CoverArtError(
            f"the cover is {len(data) / 1024:.0f} KiB; the limit is {max_bytes / 1024:.0f} KiB"
        )
    mime = image_type(data)
    if mime is None:
        raise CoverArtError(f"the cover must be a JPEG or PNG image; it is {_what_it_is(data)}")
    if declared_type is not None:
        declared = declared_type.split(";", 1)[0].strip().lower()
        if declared == "image/jpg":
            declared = "image/jpeg"
        if declared != mime:
            found = "PNG" if mime == "image/png" else "JPEG"
            raise CoverArtError(
                f"the cover was declared {declared_type!r} but its bytes are a {found} image"
            )
    width, height = _png_size(data) if mime == "image/png" else _jpeg_size(data)
    if width == 0 or height == 0:
        raise CoverArtError(f"the cover has no pixels ({width}x{height})")
    if width > max_pixels or height > max_pixels:
        raise CoverArtError(
            f"the cover is {width}x{height} px; at most {max_pixels}x{max_pixels} px are accepted"
        )
    return CoverArt(data=bytes(data), mime=mime, width=width, height=height)
