"""Check a training config before anything runs, so a user error costs no compute and leaves no run dir behind.

Every problem is a `ConfigError` (a `ValueError`) that names the field, the value given and what is allowed; the
CLI prints it as one `error: ...` paragraph and exits 2. `validate_config` is what `training.run.run` calls first;
`validate_command_line` adds what only the command line has: group choices (`model=`, `+ablation=`), the selected
arm, a run dir that can be created, and for a multirun a mistake that every job shares.
Context rules: a `model.window` larger than `data.seq_len` is allowed (a local layer then sees the whole training
sequence, as a global one does); a window larger than `model.max_seq_len` (the model's training context) with local
layers in the pattern is an error, because those layers could never act as local ones, and so is a `data.seq_len`
longer than `model.max_seq_len`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.config import ModelConfig
from workbench.data import build_data
from workbench.data.build import SOURCES
from workbench.data.byte_tokenizer import VOCAB_SIZE as BYTE_VOCAB
from workbench.data.documents import list_files
from workbench.data.passkey import check_passkey_mix
from workbench.training.distillation import check_distill
from workbench.training.dry_run import expand
from workbench.training.grid import ABLATIONS_DIR, resolve_arm
from workbench.training.loggers import KINDS as LOGGER_KINDS
from workbench.training.optim import SCHEDULES
from workbench.training.overrides import CONF_DIR, VERSION_BASE, check_overrides
from workbench.training.strategy import build_strategy


class ConfigError(ValueError):
    """A user error in the config or the command line, found before any compute: the CLI prints no traceback."""


# Lightning's accepted `precision` values (lightning.fabric.plugins.precision.precision._PRECISION_INPUT)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16", 64, 32, 16)  # fmt: skip
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
MISSING = "???"

Rule = tuple[Callable[[Any], bool], str]  # (is the value allowed, what is allowed)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(lo: int) -> Rule:
    return (lambda v: _is_int(v) and v >= lo), f"an integer >= {lo}"


def _real(lo: float, hi: float = math.inf, *, open_lo: bool = False, open_hi: bool = False) -> Rule:
    def ok(v: Any) -> bool:
        if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
            return False
        return (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)

    if hi == math.inf:
        return ok, f"a finite number {'>' if open_lo else '>='} {lo}"
    return ok, f"a number in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"


def _choice(options: tuple[Any, ...]) -> Rule:
    shown = ", ".join(dict.fromkeys(map(str, options)))  # 32 and "32" are both allowed: show it once
    return (lambda v: any(v == o and type(v) is type(o) for o in options)), shown


def _optional(rule: Rule) -> Rule:
    return (lambda v: v is None or rule[0](v)), f"null or {rule[1]}"


_BOOL: Rule = (lambda v: isinstance(v, bool)), "true or false"
_STR: Rule = (lambda v: isinstance(v, str) and v != ""), "a non-empty string"

RULES: dict[str, Rule] = {
    "seed": _int(0), "kv_reference_context": _int(1), "threads": _optional(_int(1)), "dry_run": _BOOL,
    "trainer.accelerator": _choice(ACCELERATORS), "trainer.precision": _choice(PRECISIONS),
    "trainer.max_steps": _int(1), "trainer.accumulate_grad_batches": _int(1), "trainer.val_check_interval": _int(1),
    "trainer.gradient_clip_val": _optional(_real(0)), "trainer.log_every_n_steps": _int(1),
    "trainer.throughput_window": _int(1), "trainer.peak_flops": _optional(_real(0, open_lo=True)),
    "trainer.compile": _BOOL, "trainer.progress_bar": _BOOL, "trainer.monitor_every": _int(0),
    "optim.lr": _real(0, open_lo=True), "optim.eps": _real(0, open_lo=True), "optim.weight_decay": _real(0),
    "optim.schedule": _choice(SCHEDULES), "optim.warmup_steps": _int(0), "optim.total_steps": _int(1),
    "optim.min_lr_ratio": _real(0, 1), "optim.decay_fraction": _real(0, 1),
    "logger.kind": _choice(LOGGER_KINDS),
}  # fmt: skip
_CORPUS: dict[str, Rule] = {"seq_len": _int(1), "batch_size": _int(1), "val_tokens": _int(1),
                            "val_fraction": _real(0, 1, open_lo=True, open_hi=True), "cache_dir": _STR,
                            "passkey_mix": _real(0, 1, open_hi=True), "passkey_digits": _int(1)}  # fmt: skip
DATA_RULES: dict[str, dict[str, Rule]] = {
    "stdlib": _CORPUS,
    "text": {**_CORPUS, "path": _STR, "glob": _STR},
    "hf": {**_CORPUS, "name": _STR, "tokenizer": _STR, "split": _STR, "text_field": _STR, "subset": _optional(_STR),
           "eos_token": _optional(_STR)},
    "mqar": {k: _int(1) for k in ("batch_size", "num_pairs", "num_queries", "num_keys", "num_values", "val_batches")},
    "passkey": {"seq_len": _int(1), "batch_size": _int(1), "distance": _int(0), "num_digits": _int(1),
                "val_batches": _int(1)},
}  # fmt: skip
WHAT_IS_MISSING = {"data.path": "a text file or a folder of them, e.g. data.path=~/corpus",
                   "data.name": "a Hugging Face dataset name or save_to_disk folder",
                   "data.tokenizer": "a local tokenizer.json file or tokenizer folder"}  # fmt: skip


def check_value(key: str, value: Any, rule: Rule) -> None:
    ok, allowed = rule
    if value == MISSING:
        raise ConfigError(f"{key}: missing (no value set); allowed: {WHAT_IS_MISSING.get(key, allowed)}")
    if not ok(value):
        kind = "" if value is None else f" ({type(value).__name__})"
        raise ConfigError(f"{key}: got {value!r}{kind}; allowed: {allowed}")


def _get(tree: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate_config(cfg: DictConfig) -> ModelConfig:
    """Every check that needs no training: types, ranges, choices, combinations, data paths; the model config."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        raise ConfigError(_paragraph(f"config: {e}")) from e
    model = _model(values["model"])
    for key, rule in RULES.items():
        present, value = _get(values, key)
        if present:
            check_value(key, value, rule)
    _check_betas(values["optim"].get("betas"))
    _check_resume(values.get("resume"))
    optim = values["optim"]
    if optim["warmup_steps"] > optim["total_steps"]:
        raise ConfigError(f"optim.warmup_steps: got {optim['warmup_steps']}; allowed: at most optim.total_steps="
                          f"{optim['total_steps']} (a longer warmup never reaches optim.lr)")  # fmt: skip
    if "local" in model.layer_types and model.window > model.max_seq_len:
        raise ConfigError(
            f"model.window: got {model.window}; allowed: at most model.max_seq_len={model.max_seq_len} (the training "
            "context) while model.layer_pattern has local layers; for attention over the whole context use "
            "model.layer_pattern=global"
        )
    _check_data(values["data"], model, values["seed"])
    _reuse_checks(cfg)
    return model


def _model(values: Mapping[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(values)
    except ValueError as e:
        msg = str(e)
        raise ConfigError(f"model.{msg}" if msg.split(":")[0] in values else msg) from e


def _check_betas(betas: Any) -> None:
    ok = isinstance(betas, list | tuple) and len(betas) == 2 and all(_real(0, 1, open_hi=True)[0](b) for b in betas)
    if not ok:
        raise ConfigError(f"optim.betas: got {betas!r}; allowed: two numbers in [0, 1), e.g. [0.9, 0.95]")


def _check_resume(resume: Any) -> None:
    if resume is None or isinstance(resume, bool) or (isinstance(resume, str) and Path(resume).expanduser().is_file()):
        return
    raise ConfigError(
        f"resume: got {resume!r}; allowed: true (continue from <run dir>/checkpoints/last.ckpt), false, "
        "or the path of an existing .ckpt file"
    )


def _check_data(d: Mapping[str, Any], model: ModelConfig, seed: int) -> None:
    source = d.get("source")
    check_value("data.source", source, _choice(SOURCES))
    for key, rule in DATA_RULES[source].items():
        if key in d:
            check_value(f"data.{key}", d[key], rule)
    if source == "mqar":
        vocab, context = d["num_keys"] + d["num_values"], 2 * (d["num_pairs"] + d["num_queries"])
        if context > model.max_seq_len:
            raise ConfigError(
                f"data.num_pairs, data.num_queries: got {d['num_pairs']}, {d['num_queries']}, sequences of "
                f"2 x (num_pairs + num_queries) = {context} tokens; allowed: at most model.max_seq_len="
                f"{model.max_seq_len}"
            )
    else:
        vocab = None if source == "hf" else BYTE_VOCAB  # a tokenizer's size is known once it is loaded
        if d["seq_len"] > model.max_seq_len:
            raise ConfigError(
                f"data.seq_len: got {d['seq_len']}; allowed: at most model.max_seq_len={model.max_seq_len}, the "
                "model's training context (raise model.max_seq_len to train on longer sequences)"
            )
    if vocab is not None and vocab > model.vocab_size:
        raise ConfigError(f"model.vocab_size: got {model.vocab_size}; allowed: at least {vocab}, the ids that "
                          f"data.source={source} uses")  # fmt: skip
    if source in ("mqar", "passkey"):  # synthetic and cheap: building them runs their own checks
        try:
            build_data(d, seed)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        return
    try:
        check_passkey_mix(d)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    check_writable("data.cache_dir", d["cache_dir"])
    if source == "text":
        _check_corpus(Path(d["path"]).expanduser(), d["glob"], d["seq_len"])
    if source == "hf" and not Path(d["tokenizer"]).expanduser().exists():
        raise ConfigError(f"data.tokenizer: got {d['tokenizer']!r}, which does not exist; allowed: "
                          f"{WHAT_IS_MISSING['data.tokenizer']}")  # fmt: skip


def _check_corpus(path: Path, pattern: str, seq_len: int) -> None:
    """Enough text for one train and one val window, judged from file sizes (byte tokens: bytes + one EOS a file)."""
    try:
        files = list_files(path, pattern)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e
    size = sum(f.stat().st_size for f in files)
    need = 2 * (seq_len + 1)
    if size + len(files) < need:
        raise ConfigError(
            f"data.path: got {str(path)!r}, {'an empty' if size == 0 else 'a too small'} corpus ({len(files)} "
            f"file(s) matching data.glob={pattern!r}, {size} bytes); allowed: at least 2 x (data.seq_len + 1) = "
            f"{need} tokens, one window of data.seq_len + 1 for each of the train and val splits"
        )


def check_writable(key: str, path: str | Path) -> None:
    """`path` exists as a writable folder, or can be created: its nearest existing ancestor is a writable folder."""
    p = Path(path).expanduser().absolute()
    existing = next(q for q in (p, *p.parents) if q.exists())
    if not existing.is_dir():
        raise ConfigError(f"{key}: got {str(path)!r}, but {existing} is a file, not a folder; allowed: a folder "
                          "that exists or can be created, and is writable")  # fmt: skip
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: got {str(path)!r}, but {existing} is not writable by this user; allowed: a "
                          "folder that exists or can be created, and is writable")  # fmt: skip


def _reuse_checks(cfg: DictConfig) -> None:
    """Checks that live beside the code they guard (parallel strategy, distillation), run here too."""
    try:
        if "strategy" in cfg.trainer:
            build_strategy(cfg.trainer)
        check_distill(cfg.get("distill"))
    except ValueError as e:
        raise ConfigError(str(e)) from e


# the command line ------------------------------------------------------------------------------------------------
def group_options(group: str) -> list[str] | None:
    """The options of a config group (`model`: the files in conf/model); None when `group` is not one."""
    folder = ABLATIONS_DIR if group == "ablation" else CONF_DIR / group
    if group.startswith("hydra") or not folder.is_dir():
        return None
    return sorted(p.stem for p in folder.glob("*.yaml"))


def check_choices(overrides: list[str]) -> None:
    """Every `group=option` on the command line names an existing option (sweeps: each of their options)."""
    parser = OverridesParser.create()
    for line in overrides:
        try:
            parser.parse_override(line)
        except HydraException as e:
            raise ConfigError(
                f"override {line!r}: not valid override syntax ({_paragraph(str(e))}); allowed: key=value, "
                "+key=value, ~key, group=option (quote values with brackets or commas)"
            ) from e
    for o in parser.parse_overrides(overrides):
        options = group_options(o.key_or_group)
        if options is None or o.is_delete():
            continue
        chosen = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for value in chosen:
            if value is not None and str(value) not in options:
                public = ", ".join(x for x in options if not x.startswith("_"))
                raise ConfigError(f"{o.key_or_group}: got {value!r}; allowed: {public}")


def validate_command_line(overrides: list[str], flags: list[str]) -> None:
    """What `python -m workbench.train` checks before Hydra starts. Always: group choices and keys. A single run
    (no flags): the whole config, the arm, a writable run dir. A multirun: every job's config; the command is
    rejected when no job is valid (a mistake common to all), else an invalid arm is recorded as failed by its job
    (`run` calls `validate_config`) and the grid goes on."""
    check_choices(overrides)
    check_overrides(overrides)
    if flags:
        if flags in (["--multirun"], ["-m"]):  # other flags (--help, --cfg, ...) are Hydra's own modes
            _validate_jobs(overrides)
        return
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
            full = compose("train", overrides=overrides, return_hydra_config=True)
        run_dir = OmegaConf.select(full, "hydra.run.dir")
        cfg = resolve_arm(OmegaConf.masked_copy(full, [k for k in full if k != "hydra"]))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_paragraph(str(e))) from e
    except ValueError as e:  # an unknown ablation.arm
        raise ConfigError(str(e)) from e
    validate_config(cfg)
    check_writable("hydra.run.dir", run_dir)


def _validate_jobs(overrides: list[str]) -> None:
    try:
        jobs = expand(overrides)  # the sweep as Hydra's basic sweeper expands it
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_paragraph(str(e))) from e
    first: ConfigError | None = None
    for job in jobs:
        try:
            validate_config(resolve_arm(job))
            return
        except ConfigError as e:
            first = first or e
        except ValueError as e:
            first = first or ConfigError(str(e))
    if first is not None:
        raise ConfigError(f"every job of this multirun is invalid; the first: {first}")


def _paragraph(text: str) -> str:
    return " ".join(text.split())
