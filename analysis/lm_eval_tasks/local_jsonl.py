"""lm-eval's `custom_dataset` for tasks whose rows ship beside their YAML: `dataset_kwargs: {data_files: {split:
file}}`, each file a JSON-lines file named relative to this folder (absolute paths as they are). Reads the rows
into memory (no `datasets` cache, no hub), so a task folder runs anywhere it is copied to, offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

HERE = Path(__file__).resolve().parent


def load(data_files: dict[str, str], **_metadata: Any) -> DatasetDict:
    """lm-eval passes the task's metadata too (its version, the model's arguments); the rows do not depend on it."""
    splits = {}
    for split, name in data_files.items():
        path = HERE / name
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        splits[split] = Dataset.from_list(rows)
    return DatasetDict(splits)
