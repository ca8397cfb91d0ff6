"""Compact storage of arrays inside a row's ``data`` dict (cached teacher outputs and features).

ASE stores numpy arrays in ``data`` as JSON lists of numbers: slow to write and large. An array is instead kept as
its raw bytes in base64 with dtype and shape (shared spec, formats.md: ~3x faster to write). Features default to
float16, enough for feature-matching losses, half the bytes of float32.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_TAG = "__b64array__"


def encode_array(array: Any, dtype: str | None = None) -> dict[str, Any]:
    values = np.ascontiguousarray(array, dtype=dtype or np.asarray(array).dtype)
    little = values.astype(values.dtype.newbyteorder("<"), copy=False)
    return {_TAG: base64.b64encode(little.tobytes()).decode("ascii"), "dtype": little.dtype.str, "shape": list(values.shape)}


def is_encoded_array(value: Any) -> bool:
    return isinstance(value, dict) and _TAG in value


def decode_array(value: dict[str, Any]) -> np.ndarray:
    raw = base64.b64decode(value[_TAG])
    return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(value["shape"])
