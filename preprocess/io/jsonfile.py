"""JSON files of the datasets (ScanNet's annotations, nuScenes' tables), read and checked at
the boundary: a malformed file, or one holding another kind of document, fails naming itself
and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shared.errors import DatasetError

_KINDS = {dict: "an object", list: "a list of records"}


def read_json(path: Path, kind: type, fix: str) -> Any:
    """The document in `path`, which must be a JSON `kind` (dict or list)."""
    try:
        document = json.loads(path.read_bytes())
    except ValueError as e:  # JSONDecodeError, or bytes that are not text at all
        raise DatasetError(f"{path}: malformed JSON ({e}); {fix}") from None
    if not isinstance(document, kind):
        raise DatasetError(f"{path}: holds a JSON {type(document).__name__}, expected {_KINDS[kind]}; {fix}")
    return document
