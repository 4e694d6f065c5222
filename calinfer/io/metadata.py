"""The JSON metadata calinfer stores in every file it writes (geometry id, creator, version, ...)."""

from __future__ import annotations

import datetime
import json

import numpy as np

from calinfer.errors import InputError

__all__ = ["METADATA_KEY", "build_metadata", "dumps_metadata", "json_default", "loads_metadata"]

METADATA_KEY = "calinfer_metadata"
"""Name of the TObjString (ROOT) or root-group attribute (HDF5) holding the metadata JSON."""


def json_default(value: object) -> object:
    """``default=`` for :func:`json.dumps`: numpy scalars and arrays as Python numbers and lists."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")


def build_metadata(user: dict | None, **automatic: object) -> dict:
    """Merge the automatic fields (creator, version, time, ...) with the caller's ``user`` entries."""
    from calinfer import __version__

    meta: dict = {
        "creator": "calinfer",
        "calinfer_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update({k: v for k, v in automatic.items() if v is not None})
    meta.update(user or {})
    return meta


def dumps_metadata(meta: dict) -> str:
    """Serialise metadata to JSON (numpy scalars and arrays allowed)."""
    try:
        return json.dumps(meta, sort_keys=True, default=json_default)
    except (TypeError, ValueError) as err:
        raise InputError(f"metadata cannot be stored as JSON: {err}") from err


def loads_metadata(text: str, source: str) -> dict:
    """Parse the metadata JSON found in ``source``."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{source}: the {METADATA_KEY} entry is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise InputError(f"{source}: the {METADATA_KEY} entry is not a JSON object")
    return meta
