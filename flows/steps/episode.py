"""What the outputs say about the episode: its tags (cover art included) and its chapters.

The cover and the chapter images are objects in the store that a client named. They are
checked before the source is even downloaded (`check_artwork`): a missing object or a
cover that is not a JPEG or PNG within `AUDIOFLOW_COVER_MAX_BYTES` fails the task at
once, as permanent (the same objects are missing or bad on every try), with a reason
naming the key. The cover's size is asked of the store first, so an oversized object is
refused without downloading it.

The chapters come from the payload or, when it has none (`chapters` null), from the
source itself (`episode_chapters`, after the decode check: a payload's chapters are
checked against the decoded length, and the source's are read up to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from core.episode_metadata import (
    Chapter,
    ChapterError,
    CoverArt,
    EpisodeMetadata,
    MetadataError,
    validate_chapters,
)
from core.settings import MediaSettings
from core.storage import get_store
from core.storage.errors import ObjectNotFoundError
from domain.contracts import ChapterParameters, EpisodeMetadataParameters, ErrorKind
from flows.errors import ProcessingError
from flows.steps.options import step
from media.chapters import read_chapters
from media.cover import CoverArtError, check_cover
from media.probe import BadAudioError

ChapterOrigin = Literal["payload", "source"]


@dataclass(frozen=True)
class Artwork:
    """The checked cover (None without `metadata.coverKey`) and where each chapter image
    is published (image key -> `img` URL)."""

    cover: CoverArt | None = None
    image_urls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EpisodeChapters:
    """The chapters every output and the chapters file get, and where they came from."""

    chapters: list[Chapter]
    #: None when there are none.
    origin: ChapterOrigin | None
    #: How many the source carried, when the source was read (payload chapters: None).
    source_count: int | None


def _permanent(reason: str) -> ProcessingError:
    return ProcessingError(reason, ErrorKind.PERMANENT)


def image_url(key: str, media: MediaSettings) -> str:
    """A chapter image's `img` in the chapters file: the key under the public base URL,
    or the key itself when none is set."""
    return f"{media.public_base_url}{key}" if media.public_base_url else key


@step("check-artwork")
def check_artwork(
    metadata: EpisodeMetadataParameters | None,
    chapters: Sequence[ChapterParameters] | None,
    workdir: Path,
    media: MediaSettings,
) -> Artwork:
    """Fetch and check the cover; check that every chapter image exists.

    Storage that cannot be reached is transient (the step is retried); a missing object,
    an oversized or unreadable cover is permanent.
    """
    store = get_store()
    cover: CoverArt | None = None
    cover_key = metadata.cover_key if metadata is not None else None
    if cover_key is not None:
        try:
            size = store.size(cover_key)
        except ObjectNotFoundError as exc:
            raise _permanent(
                f"cover art {cover_key!r} (metadata.coverKey) not found in {store.describe()}"
            ) from exc
        if size > media.cover_max_bytes:
            raise _permanent(
                f"cover art {cover_key!r} is not usable: it is {size} bytes; the limit is "
                f"{media.cover_max_bytes} bytes (AUDIOFLOW_COVER_MAX_BYTES)"
            )
        local = workdir / "cover.img"
        try:
            store.get_file(cover_key, local)
        except ObjectNotFoundError as exc:  # deleted between the two calls
            raise _permanent(f"cover art {cover_key!r} (metadata.coverKey) not found") from exc
        try:
            cover = check_cover(local.read_bytes(), max_bytes=media.cover_max_bytes)
        except CoverArtError as exc:
            raise _permanent(f"cover art {cover_key!r} is not usable: {exc}") from exc
        finally:
            local.unlink(missing_ok=True)
    urls: dict[str, str] = {}
    for number, chapter in enumerate(chapters or (), start=1):
        key = chapter.image_key
        if key is None or key in urls:
            continue
        try:
            store.size(key)
        except ObjectNotFoundError as exc:
            raise _permanent(
                f"chapter {number} ({chapter.title!r}): image {key!r} (imageKey) not found "
                f"in {store.describe()}"
            ) from exc
        urls[key] = image_url(key, media)
    return Artwork(cover=cover, image_urls=urls)


def episode_metadata(
    metadata: EpisodeMetadataParameters | None, cover: CoverArt | None
) -> EpisodeMetadata | None:
    """The tag writer's metadata with the checked cover; None when there is nothing."""
    if metadata is None and cover is None:
        return None
    try:
        base = metadata.as_metadata() if metadata is not None else EpisodeMetadata()
        return replace(base, cover=cover).check()
    except MetadataError as exc:
        raise _permanent(f"metadata: {exc}") from exc


def episode_chapters(
    chapters: Sequence[ChapterParameters] | None,
    source: Path,
    duration_s: float,
    image_urls: dict[str, str],
) -> EpisodeChapters:
    """The payload's chapters checked against the decoded length (ChapterError naming the
    chapter: permanent), or, when the payload has none (None), the source's own."""
    if chapters is None:
        try:
            found = read_chapters(source, duration_s=duration_s)
        except (BadAudioError, ChapterError) as exc:
            raise _permanent(f"the chapters of the source audio could not be read: {exc}") from exc
        return EpisodeChapters(found, "source" if found else None, len(found))
    wanted = [
        c.as_chapter(image_urls.get(c.image_key) if c.image_key is not None else None)
        for c in chapters
    ]
    try:
        checked = validate_chapters(wanted, duration_s)
    except ChapterError as exc:
        raise _permanent(f"chapters: {exc}") from exc
    return EpisodeChapters(checked, "payload" if checked else None, None)
