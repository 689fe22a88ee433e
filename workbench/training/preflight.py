"""What a job needs from the world, checked before its run dir exists: this machine (accelerator, device count,
precision, strategy, also under a multirun), every folder it writes (created and removed a probe file: `os.access`
says yes to root everywhere), and every file it reads, opened as the run will open it: a `data=hf` dataset and
tokenizer, the checkpoints of `resume`, `init_from` and `distill.teacher`, their shapes and vocabulary compared
with the config. `training.validate` holds the rules between fields; this module the rules between the config and
what exists. Each failure is a `ConfigError` naming the field and what is allowed (`training.errors`).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from workbench.accounting import meta_model
from workbench.checkpoints import (
    CorruptCheckpointError,
    checkpoint_file,
    model_config_of,
    model_state,
    read_checkpoint,
    shape_mismatch,
)
from workbench.config import ModelConfig
from workbench.distill import HF_PREFIX
from workbench.precision import device_type, resolve_precision
from workbench.training.errors import ConfigError, user_errors
from workbench.training.plan import distill_cache_dir
from workbench.training.schema import RESUME

FOLDER = "a folder that exists or can be created, and is writable"
CHECKPOINT = (CorruptCheckpointError, FileNotFoundError, OSError, ValueError)  # what a user's file can raise here
CPU_ONLY_NOT = ("16-mixed", "16", "transformer-engine", "transformer-engine-float16")  # Lightning swaps or fails
INIT_FROM = "null, a run dir or .ckpt path of this model's shapes, or a map of dotted overrides naming a first stage"
TEACHER = "a workbench run dir or .ckpt file, or hf:<dir> of a `transformers` causal LM, with the student's vocabulary"


def preflight(cfg: DictConfig, run_dir: Path | None, launcher: str | None = None) -> None:
    """Raise the first `ConfigError` of a validated job (`training.validate`): `run_dir` None for a dependency (its
    folder is the distill cache's or beside the run's); `launcher` the multirun's (`hydra.launcher._target_`)."""
    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    model = ModelConfig.from_dict(values["model"])
    check_machine(values["trainer"], launcher)
    if run_dir is not None:
        key = "hydra.sweep.dir" if launcher else "hydra.run.dir"
        check_writable(key, run_dir.parent if launcher else run_dir)
    if "cache_dir" in values["data"]:
        check_writable("data.cache_dir", values["data"]["cache_dir"])
    if values["distill"]["kind"] != "none":
        check_writable("distill.cache_dir", distill_cache_dir(cfg))
    if values["data"]["source"] == "hf":
        check_hf_data(values["data"], model)
    check_checkpoints(values, model)


# --- the machine -------------------------------------------------------------------------------------------------
def device_count(device: str) -> int | None:
    """Devices of this kind here (None: some, count unknown); `gpu` is what `device_type` says when none is."""
    if device == "cuda":
        return torch.cuda.device_count()
    if device == "mps":
        return int(torch.backends.mps.is_available())
    if device == "tpu":
        return None if importlib.util.find_spec("torch_xla") else 0
    return None if device == "cpu" else 0


def accelerators_here() -> list[str]:
    here = ["auto", "cpu"]
    here += ["gpu", "cuda"] if torch.cuda.is_available() else []
    here += ["gpu", "mps"] if torch.backends.mps.is_available() else []
    return here + (["tpu"] if importlib.util.find_spec("torch_xla") else [])


def check_machine(t: Mapping[str, Any], launcher: str | None) -> None:
    """Accelerator, devices, precision and strategy as Lightning would get them, on this machine."""
    accelerator, devices = str(t["accelerator"]), t["devices"]
    device = device_type(accelerator)
    count = device_count(device)
    if count == 0:
        raise ConfigError(
            f"trainer.accelerator: got {accelerator!r}, but this machine has no such device; allowed "
            f"here: {', '.join(dict.fromkeys(accelerators_here()))}"
        )
    if isinstance(devices, int) and count is not None and devices > count:
        raise ConfigError(
            f"trainer.devices: got {devices}; allowed: at most {count}, the {device} devices this machine has, or auto"
        )
    precision, _ = resolve_precision(str(t["precision"]), accelerator)
    if device == "cpu" and precision in CPU_ONLY_NOT:
        allowed = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-true", "64-true")
        raise ConfigError(
            f"trainer.precision: got {precision!r}, which a CPU does not run (Lightning would train "
            f"in another precision than the one recorded); allowed on a CPU: {', '.join(allowed)}"
        )
    if precision.startswith("transformer-engine") and importlib.util.find_spec("transformer_engine") is None:
        raise ConfigError(
            f"trainer.precision: got {precision!r}, which needs the `transformer_engine` package (not "
            "installed); allowed: 32-true, bf16-mixed, 16-mixed, bf16-true, 16-true, 64-true, auto"
        )
    if "deepspeed" in str(t["strategy"]) and device != "cuda":
        raise ConfigError(
            f"trainer.strategy: got {t['strategy']!r} on a {device} device; allowed there: auto, ddp, "
            "fsdp2 (DeepSpeed trains on CUDA devices only)"
        )
    world = devices * t["num_nodes"] if isinstance(devices, int) else (count if device != "cpu" else 1)
    if launcher and world and world > 1 and "slurm" not in launcher.lower():
        raise ConfigError(
            f"trainer.devices: got {devices} (x trainer.num_nodes={t['num_nodes']}) under --multirun; "
            "allowed: 1 unless the cluster starts the ranks (hydra/launcher=submitit_slurm with "
            "hydra.launcher.tasks_per_node = trainer.devices); or train this arm as a single run"
        )


# --- folders -----------------------------------------------------------------------------------------------------
def check_writable(key: str, path: str | Path) -> None:
    """`path` is, or can be made, a folder this process writes: a probe file is created and removed in its nearest
    existing ancestor (a real attempt: permissions, read-only mounts, /proc), and nothing else is created."""
    p = Path(path).expanduser().absolute()
    existing = next(q for q in (p, *p.parents) if q.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: got {str(path)!r}, but {existing} is a file, not a folder; allowed: {FOLDER}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".workbench-probe-", dir=existing)
    except OSError as e:
        raise ConfigError(
            f"{key}: got {str(path)!r}, but nothing can be created in {existing} ({e.strerror}); allowed: {FOLDER}"
        ) from e
    os.close(fd)
    os.unlink(probe)


# --- data --------------------------------------------------------------------------------------------------------
def check_hf_data(d: Mapping[str, Any], model: ModelConfig) -> None:
    """The tokenizer loads and fits the model's vocabulary; the dataset opens, with data.split and data.text_field.
    A third-party loader fails on a user's file with any exception type, so each load catches `Exception`."""
    from workbench.data.hf import LocalTokenizer, check_split, check_text_field, open_split

    with user_errors("data.tokenizer", "a local tokenizer.json file or tokenizer folder that loads", Exception):
        tokenizer = LocalTokenizer(d["tokenizer"], d["eos_token"])
    if tokenizer.vocab_size > model.vocab_size:
        raise ConfigError(
            f"model.vocab_size: got {model.vocab_size}; allowed: at least {tokenizer.vocab_size}, the "
            f"ids of data.tokenizer={d['tokenizer']!r}"
        )
    allowed = "a Hugging Face dataset name or save_to_disk folder that loads"
    if Path(d["name"]).expanduser().exists():
        with user_errors("data.name", allowed, Exception):
            open_split({**d, "name": str(Path(d["name"]).expanduser())})
        return
    import datasets

    with user_errors("data.name", allowed, Exception):
        info = datasets.load_dataset_builder(d["name"], d["subset"]).info
    with user_errors("data.name", allowed, ValueError):
        if info.splits:
            check_split(d, list(info.splits))
        if info.features:
            check_text_field(d, list(info.features))


# --- checkpoints -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointInfo:
    path: Path  # the .ckpt file
    keys: frozenset[str]  # its top-level keys
    shapes: dict[str, torch.Tensor]  # the model's tensors as meta tensors: shapes only
    model: ModelConfig | None  # its model config (stored, or the run's config.yaml); None when there is none


def read_info(path: str | Path) -> CheckpointInfo:
    """What a checkpoint holds, read once per file version; raises what `read_checkpoint` and friends raise."""
    file = checkpoint_file(Path(path).expanduser())
    stat = file.stat()
    return _read_info(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=16)
def _read_info(file: str, mtime_ns: int, size: int) -> CheckpointInfo:
    ckpt = read_checkpoint(file)
    state = model_state(ckpt)
    if not state:
        raise CorruptCheckpointError(f"checkpoint {file} holds no model tensors (not a workbench run's checkpoint)")
    shapes = {k: torch.empty(v.shape, device="meta") for k, v in state.items()}
    try:
        model = model_config_of(ckpt, Path(file))
    except FileNotFoundError:
        model = None
    return CheckpointInfo(Path(file), frozenset(ckpt), shapes, model)


def _fits(key: str, info: CheckpointInfo, model: ModelConfig, allowed: str) -> None:
    target = {k: v for k, v in meta_model(model).state_dict().items()}
    if why := shape_mismatch(info.shapes, target):
        raise ConfigError(f"{key}: {info.path} does not fit this model config ({why}); allowed: {allowed}")


def check_checkpoints(values: Mapping[str, Any], model: ModelConfig) -> None:
    """`resume` (a path), `init_from` (a path) and `distill.teacher` open, and fit the model the config builds."""
    resume = values["resume"]
    if isinstance(resume, str):
        with user_errors("resume", RESUME, *CHECKPOINT):
            info = read_info(resume)
            if missing := {"optimizer_states", "loops"} - info.keys:
                raise CorruptCheckpointError(
                    f"{info.path} holds no {' and '.join(sorted(missing))}: a weights-only "
                    "file cannot resume a run (init_from= starts from its weights)"
                )
        _fits("resume", info, model, f"a checkpoint of this model config ({RESUME})")
    init = values["init_from"]
    if isinstance(init, str):
        with user_errors("init_from", INIT_FROM, *CHECKPOINT):
            info = read_info(init)
        _fits(
            "init_from",
            info,
            model,
            "a checkpoint of this model's shapes (only context, RoPE scaling and data may change)",
        )
    d = values["distill"]
    if d["kind"] != "none" and d["teacher"] is not None:
        check_teacher(str(d["teacher"]), model)


def check_teacher(teacher: str, model: ModelConfig) -> None:
    """The teacher opens (a checkpoint with its model config, or a `transformers` folder with its config) and has
    the student's vocabulary."""
    if teacher.startswith(HF_PREFIX):
        from transformers import AutoConfig

        with user_errors("distill.teacher", TEACHER, Exception):  # any failure of the loader on a user's folder
            config = AutoConfig.from_pretrained(
                str(Path(teacher.removeprefix(HF_PREFIX)).expanduser()), local_files_only=True
            )
        vocab = getattr(config.get_text_config(), "vocab_size", None)
    else:
        with user_errors("distill.teacher", TEACHER, *CHECKPOINT):
            info = read_info(teacher)
            if info.model is None:
                raise FileNotFoundError(f"{info.path} stores no model config and its run has no config.yaml")
        vocab = info.model.vocab_size
    if vocab != model.vocab_size:
        raise ConfigError(
            f"distill.teacher: got {teacher!r}, a teacher with vocab_size {vocab}; allowed: {TEACHER} "
            f"(model.vocab_size={model.vocab_size}: teacher and student share the tokenizer)"
        )
