"""Every rule between fields of a training config, in one place, run once per job before its run dir exists.

Types, unknown keys and choices are the schema's (`training.schema`, checked by composition); field ranges are its
field metadata; the model's rules are `ModelConfig.validate`'s. What is left lives here, one function per group.
Nothing here imports Lightning or builds a model or a dataset: a user error costs milliseconds.
Context rules: a `model.window` larger than `data.seq_len` is allowed (a local layer then sees the whole training
sequence, as a global one does); a window larger than `model.max_seq_len` with local layers is an error, because
those layers could never act as local ones, and so is a `data.seq_len` longer than `model.max_seq_len`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.config import ModelConfig
from workbench.data.build import check_selection
from workbench.data.byte_tokenizer import VOCAB_SIZE as BYTE_VOCAB
from workbench.data.documents import list_files
from workbench.data.passkey import check_passkey_mix, longest_distance
from workbench.data.retrieval import check_retrieval
from workbench.data.retrieval import vocab_size as retrieval_vocab
from workbench.distill import HF_PREFIX
from workbench.long_context import check_buckets, check_passkey
from workbench.presets import PRESETS
from workbench.training.errors import ConfigError, from_composition, got, unknown_key
from workbench.training.schema import DATA_SOURCES, STRATEGIES, field_errors, training_seq_len

MODEL_KEYS = tuple(ModelConfig.__dataclass_fields__)


def validate(cfg: DictConfig) -> ModelConfig:
    """The model config of a composed job config (arm applied), or the first `ConfigError` it has."""
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        raise from_composition(e) from e
    values = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    model = _model(values["model"])  # first: data.seq_len and others follow its values
    for key, value, allowed in field_errors(obj):
        raise got(key, value, allowed)
    _check_optim(values["optim"])
    if "local" in model.layer_types and model.window > model.max_seq_len:
        raise ConfigError(
            f"model.window: got {model.window}; allowed: at most model.max_seq_len={model.max_seq_len} (the training "
            "context) while model.layer_pattern has local layers; for attention over the whole context use "
            "model.layer_pattern=global"
        )
    _check_data(values["data"], model)
    _check_trainer(values["trainer"], values["data"]["batch_size"])
    _check_distill(values["distill"], model, training_seq_len(values["data"]), values["data"]["batch_size"])
    _check_long_context(values["long_context"], values["data"].get("seq_len", model.max_seq_len), model)
    _check_init_from(values["init_from"])
    return model


def check_added_keys(overrides: list, cfg: DictConfig) -> None:
    """`+key=v` / `++key=v` (parsed overrides) on a key the schema lacks is an unknown key, as without the `+`:
    composition would add it, and no run reads it. Open maps (`ablation.arms`, `init_from`, ...) take any key."""
    for o in overrides:
        if not (o.is_add() or o.is_force_add()) or o.key_or_group.startswith("hydra") or o.is_delete():
            continue
        node: Any = cfg
        parts = o.key_or_group.split(".")
        for i, part in enumerate(parts):
            schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
            if schema is None or not dataclasses.is_dataclass(schema):
                break  # an open map or a plain value: anything goes below it
            fields = [f.name for f in dataclasses.fields(schema)]
            if part not in fields:
                raise unknown_key(".".join(parts[: i + 1]), sorted(fields))
            node = node[part]


def _model(values: Mapping[str, Any]) -> ModelConfig:
    try:
        return ModelConfig.from_dict(values)
    except ValueError as e:
        msg = str(e)
        raise ConfigError(f"model.{msg}" if msg.split(":")[0] in values else msg) from e


def _check_optim(optim: Mapping[str, Any]) -> None:
    if optim["warmup_steps"] > optim["total_steps"]:
        raise ConfigError(f"optim.warmup_steps: got {optim['warmup_steps']}; allowed: at most optim.total_steps="
                          f"{optim['total_steps']} (a longer warmup never reaches optim.lr)")  # fmt: skip


def _check_data(d: Mapping[str, Any], model: ModelConfig) -> None:
    source = d["source"]
    if source not in DATA_SOURCES:
        raise ConfigError(
            f"data.source: got {source!r}; allowed: {', '.join(DATA_SOURCES)} (chosen with data=<source>)"
        )
    if source == "mqar":
        context = 2 * (d["num_pairs"] + d["num_queries"])
        if context > model.max_seq_len:
            raise ConfigError(
                f"data.num_pairs, data.num_queries: got {d['num_pairs']}, {d['num_queries']}, sequences of "
                f"2 x (num_pairs + num_queries) = {context} tokens; allowed: at most model.max_seq_len="
                f"{model.max_seq_len}"
            )
        if d["num_pairs"] > min(d["num_keys"], d["num_values"]):
            raise ConfigError(f"data.num_pairs: got {d['num_pairs']}; allowed: at most data.num_keys={d['num_keys']} "
                              f"and data.num_values={d['num_values']} (keys and values are distinct within a "
                              "sequence)")  # fmt: skip
        _check_vocab(model, d["num_keys"] + d["num_values"], source)
        return
    if d["seq_len"] > model.max_seq_len:
        raise ConfigError(
            f"data.seq_len: got {d['seq_len']}; allowed: at most model.max_seq_len={model.max_seq_len}, the "
            "model's training context (raise model.max_seq_len to train on longer sequences)"
        )
    if source == "retrieval":
        try:
            check_retrieval(d)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        _check_vocab(model, retrieval_vocab(d["num_keys"], d["num_values"], d["num_distractors"]), source)
        return
    if source != "hf":  # a tokenizer's size is known once it is loaded (training.run checks it then)
        _check_vocab(model, BYTE_VOCAB, source)
    if source == "passkey":
        if (longest := longest_distance(d["seq_len"], d["num_digits"])) < 0:
            raise ConfigError(f"data.seq_len: got {d['seq_len']}; allowed: at least 2 x data.num_digits + 1 = "
                              f"{2 * d['num_digits'] + 1} (the key and the query of a passkey)")  # fmt: skip
        if d["distance"] > longest:
            raise ConfigError(f"data.distance: got {d['distance']}; allowed: at most {longest} for data.seq_len="
                              f"{d['seq_len']}, data.num_digits={d['num_digits']}")  # fmt: skip
        return
    try:
        check_passkey_mix(d)
        check_selection(d)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if source == "hf" and d["document_mask"] and d.get("eos_token") is None:
        raise ConfigError("data.document_mask: got true; allowed: false with data=hf unless data.eos_token is set "
                          "(documents are split at the EOS token the source appends to each)")  # fmt: skip
    if source == "text":
        _check_corpus(Path(d["path"]).expanduser(), d["glob"], d["seq_len"])
    if source == "hf" and not Path(d["tokenizer"]).expanduser().exists():
        raise ConfigError(f"data.tokenizer: got {d['tokenizer']!r}, which does not exist; allowed: a local "
                          "tokenizer.json file or tokenizer folder")  # fmt: skip


def _check_vocab(model: ModelConfig, vocab: int, source: str) -> None:
    if vocab > model.vocab_size:
        raise ConfigError(f"model.vocab_size: got {model.vocab_size}; allowed: at least {vocab}, the ids that "
                          f"data.source={source} uses")  # fmt: skip


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


def _check_trainer(t: Mapping[str, Any], batch_size: int) -> None:
    name = t["strategy"]
    if name not in STRATEGIES:
        from lightning.pytorch.strategies import StrategyRegistry  # only for a name that is not one of ours

        if name not in (lightning_names := StrategyRegistry.available_strategies()):
            raise ConfigError(f"trainer.strategy: got {name!r}; allowed: {', '.join(STRATEGIES)}, or a Lightning "
                              f"strategy name ({', '.join(lightning_names)})")  # fmt: skip
    if "deepspeed" in name and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            f"trainer.strategy: got {name!r}, which needs the `deepspeed` package (not installed); "
            "`pip install -e '.[deepspeed]'` on a CUDA machine, or choose one of auto, ddp, fsdp2"
        )
    if name == "fsdp2" and t["devices"] == "auto":
        raise ConfigError("trainer.devices: got 'auto'; allowed: a positive integer with trainer.strategy=fsdp2")
    if isinstance(t["devices"], int) and batch_size % (world := t["devices"] * t["num_nodes"]):
        raise ConfigError(f"data.batch_size: got {batch_size}; allowed: a multiple of the world size {world} "
                          "(trainer.devices x trainer.num_nodes)")  # fmt: skip


def _check_distill(d: Mapping[str, Any], model: ModelConfig, seq_len: int, batch_size: int) -> None:
    if d["kind"] == "none":  # the other keys are ignored, so a grid's `none` arm keeps the grid's teacher settings
        return
    if (d["teacher"] is None) == (d["teacher_model"] is None):
        raise ConfigError(
            f"distill.teacher: got {d['teacher']!r} with distill.teacher_model {d['teacher_model']!r}; allowed: "
            "exactly one of them (a run dir, .ckpt or hf:<dir>; or the model of a teacher to train first)"
        )
    if d["teacher"] is not None:
        path = Path(str(d["teacher"]).removeprefix(HF_PREFIX)).expanduser()
        if not path.exists():
            raise ConfigError(f"distill.teacher: got {d['teacher']!r}; {path} does not exist; allowed: a workbench "
                              "run dir or .ckpt file, or hf:<dir> of a `transformers` causal LM")  # fmt: skip
    else:
        tm = d["teacher_model"]
        if not ((isinstance(tm, str) and tm in PRESETS) or (isinstance(tm, dict) and not set(tm) - set(MODEL_KEYS))):
            raise ConfigError(f"distill.teacher_model: got {tm!r}; allowed: a preset ({', '.join(PRESETS)}) or a map "
                              f"of model keys ({', '.join(MODEL_KEYS)})")  # fmt: skip
    on_policy = d["kind"] == "on_policy"
    off_policy = d["off_policy"] if on_policy else d["kind"]  # what the rows the student does not sample get
    if (off_policy == "topk" or (on_policy and d["support"] == "topk")) and d["k"] > model.vocab_size:
        raise ConfigError(f"distill.k: got {d['k']} with distill.kind {d['kind']!r}; allowed: at most the "
                          f"vocabulary, {model.vocab_size}")  # fmt: skip
    if d["cache"] and off_policy != "sampled":
        raise ConfigError(f"distill.cache: got {d['cache']!r} with distill.kind {d['kind']!r}; allowed: with 'sampled' "
                          "(or 'on_policy' with distill.off_policy 'sampled')")  # fmt: skip
    if on_policy:
        _check_on_policy(d, seq_len, batch_size)


def _check_on_policy(d: Mapping[str, Any], seq_len: int, batch_size: int) -> None:
    if d["prompt_len"] + d["new_tokens"] > seq_len:
        raise ConfigError(f"distill.prompt_len, distill.new_tokens: got {d['prompt_len']}, {d['new_tokens']}; "
                          f"allowed: prompt_len + new_tokens at most the training sequence, {seq_len} tokens (a "
                          "sampled row is a prompt from a training row and its continuation)")  # fmt: skip
    if d["on_policy_mix"] > 0 and round(d["on_policy_mix"] * batch_size) == 0:
        raise ConfigError(f"distill.on_policy_mix: got {d['on_policy_mix']} with data.batch_size {batch_size}, "
                          f"round(mix x batch) = 0 sampled rows; allowed: 0, or at least {0.5 / batch_size:g} "
                          "(one row)")  # fmt: skip


LONG_CONTEXT_NAMES = {"buckets": "long_context.buckets", "distances": "long_context.passkey_distances",
                      "samples": "long_context.passkey_samples", "n_digits": "long_context.passkey_digits"}  # fmt: skip


def _check_long_context(lc: Mapping[str, Any], context: int, model: ModelConfig) -> None:
    if lc["buckets"] == 0:
        return
    try:
        check_buckets(lc["buckets"], context, LONG_CONTEXT_NAMES)
        if lc["passkey_distances"]:
            check_passkey(list(lc["passkey_distances"]), context, lc["passkey_samples"], lc["passkey_digits"],
                          model.vocab_size, LONG_CONTEXT_NAMES)  # fmt: skip
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _check_init_from(init: Any) -> None:
    """A path must exist; a map of overrides is planned as a first stage and validated as a job of its own."""
    if isinstance(init, str) and not Path(init).expanduser().exists():
        raise ConfigError(f"init_from: got {init!r}, which does not exist; allowed: null, a run dir or .ckpt path, "
                          "or a map of dotted overrides naming a first stage")  # fmt: skip
    if isinstance(init, dict) and not init:
        raise ConfigError("init_from: got {}; allowed: null, a run dir or .ckpt path, or a non-empty map of overrides")
