"""Where text datasets come from: local JSONL files and files of a Hugging Face hub dataset.

JSONL: one JSON object per line, UTF-8; a path ending in ``.gz`` is read through gzip. Lines
holding only whitespace are skipped; every other line must be a JSON object. Line numbers count
from 1 and include skipped lines, so an error names the line an editor shows.

Hub files: :func:`hub_dataset_file` downloads one file of a dataset repository with
``huggingface_hub.hf_hub_download`` (cached; a cached file is found offline too). Where the hub
cannot be reached (``HF_HUB_OFFLINE=1``, or no network) and the file is not cached, it raises
``FileNotFoundError`` naming the file and the caller's local-file alternative.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

__all__ = ["hub_dataset_file", "read_jsonl"]


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the
    line for a line that is not valid JSON or not a JSON object.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file {path} does not exist")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {line_number}: not valid JSON ({err})") from err
            if not isinstance(value, dict):
                raise ValueError(f"{path} line {line_number}: expected a JSON object, got "
                                 f"{type(value).__name__}")
            yield line_number, value


def hub_dataset_file(repo_id: str, filename: str, *, local_alternative: str,
                     revision: str | None = None,
                     cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The local path of ``filename`` in the hub dataset ``repo_id``, downloaded if not cached.

    ``local_alternative`` completes the error raised where the hub cannot be reached, e.g.
    ``"read a local copy with bonjax.data.read_hh(path)"``.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return pathlib.Path(hf_hub_download(repo_id, filename, repo_type="dataset",
                                            revision=revision, cache_dir=cache_dir))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError) as err:
        offline = "on" if constants.is_offline_mode() else "off"
        raise FileNotFoundError(
            f"{filename} of the hub dataset {repo_id} is not in the local hub cache and the hub "
            f"cannot be reached (HF_HUB_OFFLINE {offline}): {local_alternative}") from err
