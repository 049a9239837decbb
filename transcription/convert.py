"""Turn a CTranslate2 Whisper model into an openai-whisper checkpoint, without any download.

The only model on the machine is the bundled tiny.en in CTranslate2 form. openai-whisper
loads `{"dims": ..., "model_state_dict": ...}` checkpoints, so we rebuild one from the same
weights. Both formats come from the same original model (CTranslate2's converter goes through
Hugging Face's Whisper, whose weights are openai's), so the mapping is a renaming plus:

* self-attention q/k/v are fused in CTranslate2 (`linear_0`, rows q|k|v) and split here;
* cross-attention k/v are fused (`linear_1`, rows k|v), q is `linear_0`, output `linear_2`;
* openai's key projections have no bias. CTranslate2 stores zeros there, and even a non-zero
  key bias would not matter: it adds `q·b` to every score of a query, which softmax ignores;
* layer norms are `gamma`/`beta`; the output projection is an alias of the token embedding,
  which openai ties the same way.

Every key that openai-whisper's model expects must be filled with the right shape and every
CTranslate2 tensor must be used: a conversion that is off by one tensor fails here, loudly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from transcription.ct2 import Ct2Weights, read_model_bin
from transcription.errors import ModelConversionError

if TYPE_CHECKING:
    from whisper.model import Whisper

#: Bump when the mapping changes, so that cached conversions are rebuilt.
CONVERTER_VERSION = 1

#: CTranslate2 variables that describe the architecture rather than hold weights.
_EXPECTED_SCALARS = {
    "num_heads",
    "activation",
    "alibi",
    "alignment_heads",
    "alignment_layer",
    "pre_norm",
    "scale_embeddings",
    "start_from_zero_embedding",
}

_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def _count_layers(weights: Ct2Weights, side: str) -> int:
    indexes = {
        int(m.group(2))
        for name in weights.variables
        if (m := _LAYER.match(name)) and m.group(1) == side
    }
    if not indexes or indexes != set(range(max(indexes) + 1)):
        raise ModelConversionError(f"{side} layers are missing or not contiguous: {indexes}")
    return max(indexes) + 1


def _scalar(weights: Ct2Weights, name: str) -> int:
    try:
        return int(weights.variables[name])
    except KeyError as exc:
        raise ModelConversionError(f"CTranslate2 model has no {name}") from exc


def model_dimensions(weights: Ct2Weights) -> dict[str, int]:
    """openai-whisper's `ModelDimensions` fields, read off the tensor shapes."""
    var = weights.variables
    try:
        conv1 = var["encoder/conv1/weight"]
        audio_pos = var["encoder/position_encodings/encodings"]
        embedding = var["decoder/embeddings/weight"]
        text_pos = var["decoder/position_encodings/encodings"]
    except KeyError as exc:
        raise ModelConversionError(f"not a CTranslate2 Whisper model: no {exc}") from exc
    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(audio_pos.shape[0]),
        "n_audio_state": int(audio_pos.shape[1]),
        "n_audio_head": _scalar(weights, "encoder/num_heads"),
        "n_audio_layer": _count_layers(weights, "encoder"),
        "n_vocab": int(embedding.shape[0]),
        "n_text_ctx": int(text_pos.shape[0]),
        "n_text_state": int(embedding.shape[1]),
        "n_text_head": _scalar(weights, "decoder/num_heads"),
        "n_text_layer": _count_layers(weights, "decoder"),
    }


class _Mapper:
    """Fills openai state-dict keys from CTranslate2 variables and records what was used."""

    def __init__(self, weights: Ct2Weights) -> None:
        self.weights = weights
        self.state: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()

    def get(self, name: str) -> np.ndarray:
        try:
            value = self.weights.variables[name]
        except KeyError as exc:
            raise ModelConversionError(f"CTranslate2 model has no variable {name}") from exc
        self.used.add(name)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        if key in self.state:
            raise ModelConversionError(f"{key} mapped twice")
        # Copy: the source is a read-only view into the file's bytes.
        self.state[key] = torch.from_numpy(np.array(value, copy=True))

    def copy(self, key: str, name: str) -> None:
        self.put(key, self.get(name))

    def linear(self, prefix: str, name: str) -> None:
        self.copy(f"{prefix}.weight", f"{name}/weight")
        self.copy(f"{prefix}.bias", f"{name}/bias")

    def layer_norm(self, prefix: str, name: str) -> None:
        self.copy(f"{prefix}.weight", f"{name}/gamma")
        self.copy(f"{prefix}.bias", f"{name}/beta")

    def fused(self, prefixes: list[str | None], name: str, *, keys_without_bias: set[int]) -> None:
        """Split a fused projection by rows; a `None` prefix marks a part that is dropped."""
        weight, bias = self.get(f"{name}/weight"), self.get(f"{name}/bias")
        parts = len(prefixes)
        if weight.shape[0] % parts or bias.shape[0] != weight.shape[0]:
            raise ModelConversionError(f"{name} of shape {weight.shape} is not {parts} fused parts")
        for index, (w, b) in enumerate(
            zip(np.split(weight, parts), np.split(bias, parts), strict=True)
        ):
            prefix = prefixes[index]
            if prefix is None:
                continue
            self.put(f"{prefix}.weight", w)
            if index not in keys_without_bias:
                self.put(f"{prefix}.bias", b)

    def attention_block(self, prefix: str, name: str, *, cross: bool) -> None:
        self.layer_norm(f"{prefix}.attn_ln", f"{name}/self_attention/layer_norm")
        self.fused(
            [f"{prefix}.attn.query", f"{prefix}.attn.key", f"{prefix}.attn.value"],
            f"{name}/self_attention/linear_0",
            keys_without_bias={1},
        )
        self.linear(f"{prefix}.attn.out", f"{name}/self_attention/linear_1")
        if cross:
            self.layer_norm(f"{prefix}.cross_attn_ln", f"{name}/attention/layer_norm")
            self.linear(f"{prefix}.cross_attn.query", f"{name}/attention/linear_0")
            self.fused(
                [f"{prefix}.cross_attn.key", f"{prefix}.cross_attn.value"],
                f"{name}/attention/linear_1",
                keys_without_bias={0},
            )
            self.linear(f"{prefix}.cross_attn.out", f"{name}/attention/linear_2")
        self.layer_norm(f"{prefix}.mlp_ln", f"{name}/ffn/layer_norm")
        self.linear(f"{prefix}.mlp.0", f"{name}/ffn/linear_0")
        self.linear(f"{prefix}.mlp.2", f"{name}/ffn/linear_1")


def _map_weights(weights: Ct2Weights, dims: dict[str, int]) -> _Mapper:
    m = _Mapper(weights)
    m.linear("encoder.conv1", "encoder/conv1")
    m.linear("encoder.conv2", "encoder/conv2")
    m.copy("encoder.positional_embedding", "encoder/position_encodings/encodings")
    for i in range(dims["n_audio_layer"]):
        m.attention_block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    m.layer_norm("encoder.ln_post", "encoder/layer_norm")

    m.copy("decoder.token_embedding.weight", "decoder/embeddings/weight")
    m.copy("decoder.positional_embedding", "decoder/position_encodings/encodings")
    for i in range(dims["n_text_layer"]):
        m.attention_block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    m.layer_norm("decoder.ln", "decoder/layer_norm")

    # openai ties the output projection to the token embedding; accept only a model where
    # CTranslate2 did the same (stored as an alias or as an equal copy).
    projection = m.get("decoder/projection/weight")
    if not np.array_equal(projection, weights.variables["decoder/embeddings/weight"]):
        raise ModelConversionError("output projection differs from the token embedding")
    if "decoder/projection/bias" in weights.variables and np.any(m.get("decoder/projection/bias")):
        raise ModelConversionError("output projection has a bias openai-whisper cannot hold")
    return m


def _check_flags(weights: Ct2Weights) -> None:
    var = weights.variables
    if weights.spec_name != "WhisperSpec":
        raise ModelConversionError(f"not a Whisper model: spec is {weights.spec_name}")
    if "decoder/pre_norm" in var and not int(var["decoder/pre_norm"]):
        raise ModelConversionError("decoder is post-norm; Whisper is pre-norm")
    # A bool flag (int8) means "scale by sqrt(d_model)" when set; a float is the factor.
    scale = var.get("decoder/scale_embeddings")
    if scale is not None and float(scale) != (1.0 if scale.dtype.kind == "f" else 0.0):
        raise ModelConversionError("decoder scales its embeddings; openai-whisper does not")


def expected_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Every key of openai-whisper's state dict with its shape, without allocating weights.

    Built from the encoder and decoder on the meta device: the top-level `Whisper` only adds
    a non-persistent (not saved) `alignment_heads` buffer, and cannot be built on meta.
    """
    from whisper.model import AudioEncoder, TextDecoder

    with torch.device("meta"):
        encoder = AudioEncoder(
            dims["n_mels"],
            dims["n_audio_ctx"],
            dims["n_audio_state"],
            dims["n_audio_head"],
            dims["n_audio_layer"],
        )
        decoder = TextDecoder(
            dims["n_vocab"],
            dims["n_text_ctx"],
            dims["n_text_state"],
            dims["n_text_head"],
            dims["n_text_layer"],
        )
    shapes = {f"encoder.{k}": tuple(v.shape) for k, v in encoder.state_dict().items()}
    shapes.update({f"decoder.{k}": tuple(v.shape) for k, v in decoder.state_dict().items()})
    return shapes


def _verify(mapper: _Mapper, dims: dict[str, int]) -> None:
    expected = expected_shapes(dims)
    state = mapper.state
    problems: list[str] = []
    problems += [f"missing {k}" for k in sorted(expected.keys() - state.keys())]
    problems += [f"unexpected {k}" for k in sorted(state.keys() - expected.keys())]
    problems += [
        f"{k}: got {tuple(state[k].shape)}, expected {shape}"
        for k, shape in sorted(expected.items())
        if k in state and tuple(state[k].shape) != shape
    ]
    unused = [
        name
        for name, value in mapper.weights.variables.items()
        if name not in mapper.used
        and name not in mapper.weights.aliases
        and not (value.ndim == 0 and name.rsplit("/", 1)[-1] in _EXPECTED_SCALARS)
    ]
    problems += [f"unused CTranslate2 variable {n} (quantized model?)" for n in sorted(unused)]
    if problems:
        shown = "; ".join(problems[:10])
        raise ModelConversionError(f"conversion mismatch ({len(problems)} problems): {shown}")


def checkpoint_from_weights(
    weights: Ct2Weights, alignment_heads: list[list[int]] | None = None
) -> dict[str, Any]:
    """Build an openai-whisper checkpoint dict from CTranslate2 Whisper weights.

    Tensors keep the source precision (float16 for the bundled model, like openai's own
    checkpoints); `load_state_dict` widens them into the float32 model on load.
    """
    _check_flags(weights)
    dims = model_dimensions(weights)
    mapper = _map_weights(weights, dims)
    _verify(mapper, dims)
    checkpoint: dict[str, Any] = {"dims": dims, "model_state_dict": mapper.state}
    if alignment_heads:
        checkpoint["alignment_heads"] = alignment_heads
    return checkpoint


def convert_ct2_model(model_dir: Path) -> dict[str, Any]:
    """Build an openai-whisper checkpoint dict from a CTranslate2 Whisper model directory."""
    return checkpoint_from_weights(
        read_model_bin(model_dir / "model.bin"), _alignment_heads(model_dir)
    )


def _alignment_heads(model_dir: Path) -> list[list[int]] | None:
    """The (layer, head) pairs from config.json, used by openai-whisper for word timings."""
    config_path = model_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    heads = config.get("alignment_heads")
    return [[int(layer), int(head)] for layer, head in heads] if heads else None


def apply_alignment_heads(model: Whisper, heads: list[list[int]]) -> None:
    """Set openai-whisper's alignment-head mask the way `set_alignment_heads` would."""
    dims = model.dims
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
