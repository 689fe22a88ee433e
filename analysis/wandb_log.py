"""Read a W&B run's binary transaction log (`run-<id>.wandb`) without a server: config, summary, history, exit.

W&B >= 0.19 writes an offline run's config and summary only into this log (`files/` holds no config.yaml or
wandb-summary.json until `wandb sync`), and the Python `DataStore` reader left the package with its Go core. The
format is LevelDB's log format (https://github.com/google/leveldb/blob/main/doc/log_format.md) behind a 7-byte
header: 32 KiB blocks of chunks, each `crc32(type + data)`, length, type (full / first / middle / last), data; a
block's last < 7 bytes are zero padding. A logical record is one protobuf `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")  # ident, magic, version
HEADER_VALUE = (b":W&B", 0xBEE1, 0)
CHUNK = struct.Struct("<IHB")  # checksum, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[Any]:
    """The log's `Record`s in write order; stops at a torn or unwritten tail (a run killed mid-write)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    if len(data) < HEADER.size or HEADER.unpack_from(data) != HEADER_VALUE:
        raise ValueError(f"W&B log {path}: header {data[: HEADER.size]!r}; allowed: {HEADER.pack(*HEADER_VALUE)!r}")
    pos, parts = HEADER.size, []
    while pos + CHUNK.size <= len(data):
        if BLOCK - pos % BLOCK < CHUNK.size:  # the block's trailer
            pos += BLOCK - pos % BLOCK
            continue
        checksum, length, kind = CHUNK.unpack_from(data, pos)
        chunk = data[pos + CHUNK.size : pos + CHUNK.size + length]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or len(chunk) < length:
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != checksum:
            return
        pos += CHUNK.size + length
        parts = [chunk] if kind in (FULL, FIRST) else [*parts, chunk]
        if kind in (FULL, LAST):
            record = Record()
            record.ParseFromString(b"".join(parts))
            yield record


def _value(item: Any) -> Any:
    """A config / summary / history item's value: JSON text, or (history items) a typed field."""
    kind = item.WhichOneof("value") if item.DESCRIPTOR.oneofs_by_name.get("value") else None
    if kind is None or kind == "json":
        return json.loads(item.json if kind else item.value_json)
    return None if kind == "none" else getattr(item, kind)


def _keys(item: Any) -> list[str]:
    return list(item.nested_key) or [item.key]


def _apply(tree: dict[str, Any], updates: Iterable[Any], removes: Iterable[Any]) -> None:
    """Config and summary records are edits of a nested dict: set or delete the value at a key path."""
    for item in updates:
        *parents, leaf = _keys(item)
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = _value(item)
    for item in removes:
        *parents, leaf = _keys(item)
        node = tree
        for key in parents:
            node = node.get(key, {})
        node.pop(leaf, None)


@dataclass
class WandbLog:
    """What a run logged: config and summary without W&B's own `_wandb` entry; exit_code None: never exited."""

    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read(path: str | Path, history: bool = False) -> WandbLog:
    """Replay the log: run record, then config / summary edits in order, the exit record; history rows on request."""
    log = WandbLog()
    for record in records(Path(path)):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            log.run_id = record.run.run_id
            _apply(log.config, record.run.config.update, record.run.config.remove)
            _apply(log.summary, record.run.summary.update, record.run.summary.remove)
        elif kind == "config":
            _apply(log.config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(log.summary, record.summary.update, record.summary.remove)
        elif kind == "history" and history:
            log.history.append({".".join(_keys(item)): _value(item) for item in record.history.item})
        elif kind == "exit":
            log.exit_code = record.exit.exit_code
    log.config.pop("_wandb", None)
    log.summary.pop("_wandb", None)
    return log
