"""Checkpoints written to a temp file and moved into place, the replaced one kept, and read back only when sound.

A crash mid-write leaves at most a stray `.<name>.<pid>.tmp`, never a half-written `last.ckpt`. Each time a
checkpoint file is replaced, its previous version stays beside it as `<stem>.prev.ckpt` (a hard link: no copy), so
a `last.ckpt` damaged after the fact (a truncated copy, a bad disk) still leaves one good checkpoint to resume from.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from workbench.checkpoints import CorruptCheckpointError, read_checkpoint


def previous_version(path: str | Path) -> Path:
    """Where the checkpoint that `path` replaced is kept: `last.ckpt` -> `last.prev.ckpt`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(checkpoint, tmp)
        if path.exists():
            keep = path.with_name(f".{previous_version(path).name}.{os.getpid()}.tmp")
            keep.unlink(missing_ok=True)
            try:
                os.link(path, keep)  # `path` stays in place until the new file replaces it
            except OSError:  # a filesystem without hard links
                shutil.copyfile(path, keep)
            os.replace(keep, previous_version(path))
        os.replace(tmp, path)


def checkpoint_step(path: str | Path) -> int:
    """The global step a checkpoint holds; raises `CorruptCheckpointError` naming the file if it does not load."""
    return int(read_checkpoint(path, keys=("global_step", "state_dict"))["global_step"])


def newest_sound_checkpoint(last: Path) -> tuple[Path, int] | None:
    """`last` and its step, or its previous version when `last` is corrupt (with a warning); None when neither exists.

    Raises `CorruptCheckpointError` when every candidate there is corrupt.
    """
    errors = []
    for path in (last, previous_version(last)):
        if not path.is_file():
            continue
        try:
            step = checkpoint_step(path)
        except CorruptCheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"resume: {errors[0]}; falling back to {path} (step {step})", RuntimeWarning, stacklevel=2)
        return path, step
    if errors:
        raise CorruptCheckpointError(
            f"resume: {'; '.join(errors)}; delete them to start over, or pass resume=<path of a good checkpoint>"
        )
    return None
