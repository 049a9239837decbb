"""Reader for CTranslate2's `model.bin`, so that its weights can be used outside CTranslate2.

CTranslate2 only loads its own format and offers no way back out. To run the bundled model
with openai-whisper we read the file ourselves. The layout is the one written by
`ctranslate2.specs.model_spec.ModelSpec._serialize` (binary version 6), little-endian:

    u32 binary version
    str spec name          (str = u16 length incl. trailing NUL, bytes, NUL)
    u32 spec revision
    u32 variable count
    per variable: str name, u8 rank, u32 * rank shape, u8 dtype id, u32 byte count, bytes
    u32 alias count
    per alias: str alias name, str target variable name

Aliases are how CTranslate2 stores a tensor once when two names share it (Whisper's output
projection is the token embedding); they are resolved here so callers see plain names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transcription.errors import ModelConversionError

#: The only binary version read; older files are refused rather than misread.
SUPPORTED_BINARY_VERSION = 6

#: CTranslate2's dtype ids, in the order of `model_spec._dtype_to_type_id`. bfloat16 has no
#: numpy type: it is read as raw 16-bit words and widened to float32 below.
_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "int16": np.dtype("<i2"),
    "int32": np.dtype("<i4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
}


@dataclass(frozen=True)
class Ct2Weights:
    """Every variable of a CTranslate2 model, aliases resolved."""

    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    #: Names that were stored as aliases of another variable (alias -> target).
    aliases: dict[str, str]


class _Cursor:
    """Sequential reads over the file's bytes, with a clear error on truncation."""

    def __init__(self, data: bytes, path: Path) -> None:
        self._data = data
        self._pos = 0
        self._path = path

    def take(self, size: int) -> memoryview:
        if self._pos + size > len(self._data):
            raise ModelConversionError(
                f"{self._path} is truncated: wanted {size} bytes at offset {self._pos}, "
                f"file has {len(self._data)}"
            )
        view = memoryview(self._data)[self._pos : self._pos + size]
        self._pos += size
        return view

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))
        return int(value)

    def string(self) -> str:
        length = self.unpack("H")
        raw = bytes(self.take(length))
        return raw.rstrip(b"\x00").decode("utf-8")

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos


def _to_array(raw: memoryview, dtype_name: str, shape: list[int]) -> np.ndarray:
    array = np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype_name]).reshape(shape)
    if dtype_name == "bfloat16":
        # bfloat16 is the top half of a float32: shift it back into place.
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array


def read_model_bin(path: Path) -> Ct2Weights:
    """Read all variables of a CTranslate2 `model.bin`; arrays are read-only views."""
    data = path.read_bytes()
    cursor = _Cursor(data, path)
    version = cursor.unpack("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise ModelConversionError(
            f"{path} has CTranslate2 binary version {version}; only version "
            f"{SUPPORTED_BINARY_VERSION} can be read (re-convert it with ctranslate2>=3)"
        )
    spec_name = cursor.string()
    spec_revision = cursor.unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(cursor.unpack("I")):
        name = cursor.string()
        shape = [cursor.unpack("I") for _ in range(cursor.unpack("B"))]
        type_id = cursor.unpack("B")
        if type_id >= len(_DTYPES):
            raise ModelConversionError(f"{path}: variable {name} has unknown dtype id {type_id}")
        dtype_name = _DTYPES[type_id]
        size = cursor.unpack("I")
        expected = int(np.prod(shape, dtype=np.int64)) * _NUMPY_DTYPES[dtype_name].itemsize
        if size != expected:
            raise ModelConversionError(
                f"{path}: variable {name} {shape} {dtype_name} has {size} bytes, "
                f"expected {expected}"
            )
        variables[name] = _to_array(cursor.take(size), dtype_name, shape)
    aliases: dict[str, str] = {}
    for _ in range(cursor.unpack("I")):
        alias, target = cursor.string(), cursor.string()
        if target not in variables:
            raise ModelConversionError(f"{path}: alias {alias} points to missing {target}")
        aliases[alias] = target
        variables[alias] = variables[target]
    if cursor.remaining:
        raise ModelConversionError(f"{path}: {cursor.remaining} unexpected trailing bytes")
    return Ct2Weights(spec_name, spec_revision, variables, aliases)
