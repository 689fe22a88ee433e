"""The training config's one typed schema: every group is a dataclass registered in Hydra's ConfigStore.

Composition itself then rejects a wrong type, an unknown key or an unknown choice (OmegaConf's structured
configs), for the command line, the config files and every ablation arm alike. Each field that has a range carries
it as metadata (`allowed` in words, `check` as a predicate), so one loop (`field_errors`) checks them all and the
type errors OmegaConf raises are reported with the same words. Rules between fields are `training.validate`'s.

The model node's schema is `ModelConfig`'s own fields (`model_schema`): the library's dataclass is the one source,
its `validate()` the one set of model rules. Presets are the `model` group's options; data sources the `data`
group's (one dataclass each, so `data.path` exists only where `data=text`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from workbench import measures
from workbench.config import ModelConfig
from workbench.presets import PRESETS

Check = Callable[[Any], bool]


def ranged(default: Any, allowed: str, check: Check | None = None) -> Any:
    """A field with its allowed values in words (error messages) and, when it has a range, a predicate."""
    kind = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(metadata={"allowed": allowed, "check": check}, **kind)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def integer(default: Any, lo: int, null: bool = False) -> Any:
    return ranged(default, f"{'null or ' * null}an integer >= {lo}", lambda v: (null and v is None) or v >= lo)


def number(default: Any, *, above: bool = False, null: bool = False) -> Any:
    """A finite number >= 0 (> 0 when `above`), or null when `null`."""
    words = f"{'null or ' * null}a finite number {'>' if above else '>='} 0"
    return ranged(default, words, lambda v: (null and v is None) or (_finite(v) and (v > 0 if above else v >= 0)))


def unit(default: Any, *, open_lo: bool = False, open_hi: bool = False) -> Any:
    """A number in [0, 1], either end open on request."""
    text = f"a number in {'(' if open_lo else '['}0, 1{')' if open_hi else ']'}"
    return ranged(default, text, lambda v: (v > 0 if open_lo else v >= 0) and (v < 1 if open_hi else v <= 1))


def text(default: Any) -> Any:
    return ranged(default, "a non-empty string", lambda v: v is None or v != "")


# the choices of the fields OmegaConf checks by name (a wrong one is an error that lists these)
Schedule = StrEnum("Schedule", "cosine wsd constant", module=__name__)
LoggerKind = StrEnum("LoggerKind", "wandb csv none", module=__name__)
Underpowered = StrEnum("Underpowered", "stop run", module=__name__)
DistillKind = StrEnum("DistillKind", "none sampled topk full on_policy", module=__name__)
OffPolicyKind = StrEnum("OffPolicyKind", "none sampled topk full", module=__name__)  # on_policy's other rows
Support = StrEnum("Support", "full topk", module=__name__)  # on_policy's divergence: whole vocabulary or top-k
Accelerator = StrEnum("Accelerator", "auto cpu gpu cuda mps tpu", module=__name__)
DocumentPositions = StrEnum("DocumentPositions", "restart continue", module=__name__)  # RoPE under document_mask


# Lightning's `precision` values (those its Trainer lists when refusing another; a test keeps them equal) and `auto`:
# bf16-mixed where the device computes bf16 natively, else 32-true (workbench.precision)
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "64", "32", "16", "bf16")  # fmt: skip
STRATEGIES = ("auto", "ddp", "fsdp2", "deepspeed_zero3")  # ours; any name in Lightning's registry passes too


# --- model -------------------------------------------------------------------------------------------------------
_SCHEMA_TYPES = {int: int, float: float, bool: bool, str: str}


def _schema_type(hint: Any) -> Any:
    """OmegaConf's node type for a `ModelConfig` annotation: unions of one type and None stay typed, others Any."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if hint in _SCHEMA_TYPES:
        return hint
    if len(args) == 1 and args[0] in _SCHEMA_TYPES:
        return args[0] | None
    if set(args) == {int, float}:  # a float field that takes an integer literal
        return float | None if type(None) in typing.get_args(hint) else float
    return Any


def model_schema() -> type:
    """`ModelConfig`'s fields as a mutable dataclass: the `model` node; `ModelConfig.validate` holds its rules."""
    hints = typing.get_type_hints(ModelConfig)
    fields = [(f.name, _schema_type(hints[f.name]), field(default=f.default)) for f in dataclasses.fields(ModelConfig)]
    return dataclasses.make_dataclass("ModelSchema", fields)


ModelSchema = model_schema()


def model_node(cfg: ModelConfig) -> Any:
    values = cfg.to_dict()
    return ModelSchema(**values)


# --- data --------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """What every source has; `source` names the group option (`data=<source>`) and must stay it."""

    source: str = MISSING
    batch_size: int = integer(16, 1)  # the global batch (every rank trains on its slice)


def training_seq_len(data: Any) -> int:
    """Tokens per training row: `seq_len`, or an MQAR source's 2 x (num_pairs + num_queries)."""
    return int(data.get("seq_len") or 2 * (data["num_pairs"] + data["num_queries"]))


@dataclass
class CorpusData(DataConfig):
    """A text corpus as byte (or tokenizer) ids, split by documents, cached as memmaps."""

    seq_len: int = integer(II("model.max_seq_len"), 1)
    val_fraction: float = unit(0.02, open_lo=True, open_hi=True)  # of documents, chosen by a hash of their path
    val_tokens: int = integer(65536, 1)  # fixed validation budget, the same for every arm
    # the selection split (choices made from data, e.g. each arm's best lr): documents apart from train and val
    selection_fraction: float | None = None  # null: data.val_fraction (checked by workbench.data.build)
    selection_tokens: int | None = integer(None, 1, null=True)  # null: data.val_tokens
    cache_dir: str = text(".cache/workbench/tokens")
    passkey_mix: float = unit(0.0, open_hi=True)  # share of each training batch's rows that are passkey rows
    passkey_digits: int = integer(5, 1)  # digits per passkey, as long_context.passkey_digits
    # attend only within each document packed in a window (documents end with EOS; hf: needs data.eos_token), RoPE
    # positions restarting at each document or continuing across the window
    document_mask: bool = False
    document_positions: DocumentPositions = DocumentPositions.restart


@dataclass
class StdlibData(CorpusData):
    """The running interpreter's standard-library source (~12.6 MB), byte tokens; always available offline."""

    source: str = "stdlib"


@dataclass
class TextData(CorpusData):
    """Local text: a file, or every file matching `glob` under a folder; byte tokens."""

    source: str = "text"
    path: str = ranged(MISSING, "a text file or a folder of them, e.g. data.path=~/corpus")
    glob: str = text("*.txt")


@dataclass
class HFData(CorpusData):
    """A Hugging Face dataset (hub name or save_to_disk folder) with a local tokenizer (no passkey mix)."""

    source: str = "hf"
    name: str = ranged(MISSING, "a Hugging Face dataset name or save_to_disk folder")
    tokenizer: str = ranged(MISSING, "a local tokenizer.json file or tokenizer folder")
    subset: str | None = text(None)
    split: str = text("train")
    text_field: str = text("text")
    eos_token: str | None = text(None)  # appended after every row when set


@dataclass
class MqarData(DataConfig):
    """Multi-query associative recall (Zoology): num_pairs key-value pairs, then num_queries of those keys.

    Keys and values are distinct within a sequence, so there are two floors: chance = 1 / num_values, and guessing
    among the values in context = 1 / num_pairs. Recall means accuracy well above the second; small models sit on
    that plateau for > 1,000 steps at init_std 0.02 (tests/workbench/training/test_train.py uses model.init_std=0.1).
    """

    source: str = "mqar"
    batch_size: int = integer(32, 1)
    num_pairs: int = integer(16, 1)
    num_queries: int = integer(16, 1)
    num_keys: int = integer(64, 1)
    num_values: int = integer(64, 1)
    val_batches: int = integer(8, 1)
    selection_batches: int | None = integer(None, 1, null=True)  # null: data.val_batches


@dataclass
class PasskeyData(DataConfig):
    """Passkey retrieval: the digits must be copied across `distance` filler tokens. Chance = 0.1 per digit."""

    source: str = "passkey"
    seq_len: int = integer(II("model.max_seq_len"), 1)
    distance: int = integer(128, 0)
    num_digits: int = integer(5, 1)
    val_batches: int = integer(8, 1)
    selection_batches: int | None = integer(None, 1, null=True)  # null: data.val_batches


@dataclass
class RetrievalData(DataConfig):
    """Retrieval by content, graded by distance (workbench.data.retrieval): num_pairs key-value pairs among
    distractors, then QUERY and num_queries of the keys, each followed by its value; the loss is on those values.
    Pair 0's distance (query minus pair) is drawn within a bucket of `distance_edges`, every bucket in every batch;
    the other queries' pairs sit anywhere. results.json["retrieval"] holds the validation accuracy per bucket over
    every query. Chance = 1 / num_values."""

    source: str = "retrieval"
    batch_size: int = integer(32, 1)
    seq_len: int = integer(II("model.max_seq_len"), 4)
    num_pairs: int = integer(4, 1)
    num_keys: int = integer(32, 1)
    num_values: int = integer(32, 1)
    num_distractors: int = integer(16, 1)
    num_queries: int = integer(1, 1)  # answers per row: more signal per step for the same tokens
    # bucket edges in tokens, [a, b) per bucket, from 3 to seq_len; null: 3, powers of two from 8, seq_len
    distance_edges: list[int] | None = None
    val_batches: int = integer(8, 1)
    selection_batches: int | None = integer(None, 1, null=True)  # null: data.val_batches


DATA_SOURCES: dict[str, type[DataConfig]] = {
    "stdlib": StdlibData, "text": TextData, "hf": HFData, "mqar": MqarData, "passkey": PasskeyData,
    "retrieval": RetrievalData,
}  # fmt: skip


# --- the other groups --------------------------------------------------------------------------------------------
@dataclass
class OptimConfig:
    """AdamW (no decay on norms, biases, embeddings); linear warmup, then cosine, wsd or constant."""

    lr: float = number(3.0e-3, above=True)
    betas: list[float] = ranged([0.9, 0.95], "two numbers in [0, 1), e.g. [0.9, 0.95]",  # noqa: RUF009 (a field)
                                lambda v: len(v) == 2 and all(0 <= b < 1 for b in v))  # fmt: skip
    eps: float = number(1.0e-8, above=True)
    weight_decay: float = number(0.1)
    schedule: Schedule = Schedule.cosine
    warmup_steps: int = integer(50, 0)
    total_steps: int = integer(II("trainer.max_steps"), 1)  # the schedule's horizon
    min_lr_ratio: float = unit(0.1)
    decay_fraction: float = unit(0.2)  # wsd: the final fraction of total_steps spent decaying linearly
    z_loss: float = number(0.0)  # coefficient of the mean log² Z of the output softmax (OLMo-core: 1e-5); 0: off


@dataclass
class TrainerConfig:
    """Lightning Trainer settings. peak_flops null: the datasheet peak (CUDA) or a measured, cached one
    (`workbench.peak`); a number: MFU's peak."""

    accelerator: Accelerator = Accelerator.auto
    devices: Any = ranged(1, "a positive integer or auto", lambda v: v == "auto" or (type(v) is int and v >= 1))  # noqa: RUF009
    num_nodes: int = integer(1, 1)
    strategy: str = text("auto")  # auto | ddp | fsdp2 | deepspeed_zero3 | a Lightning strategy name
    precision: str = ranged("auto", ", ".join(PRECISIONS), lambda v: v in PRECISIONS)
    max_steps: int = integer(1000, 1)
    accumulate_grad_batches: int = integer(1, 1)
    gradient_clip_val: float | None = number(1.0, null=True)
    val_check_interval: int = integer(200, 1)  # validate (and checkpoint) every this many optimiser steps
    log_every_n_steps: int = integer(10, 1)
    throughput_window: int = integer(20, 1)
    peak_flops: float | None = number(None, above=True, null=True)
    compile: bool = False
    progress_bar: bool = True
    monitor_every: int = integer(10, 0)  # stability monitors every this many steps; 0: off


@dataclass
class LoggerConfig:
    """metrics.csv is always written; W&B runs offline (files in the run dir) unless WANDB_API_KEY is set."""

    kind: LoggerKind = LoggerKind.wandb
    project: str = text("workbench")
    group: str | None = None
    job_type: str = text("train")
    name: str | None = None  # null: the run dir's name
    tags: list[str] = field(default_factory=list)


@dataclass
class DistillConfig:
    """Knowledge distillation while training (workbench/distill.py); kind none: off, the other keys ignored."""

    kind: DistillKind = DistillKind.none
    k: int = integer(256, 1)  # vocabulary entries per token (sampled, topk)
    alpha: float = unit(0.0)  # training loss = (1 - alpha) * distillation + alpha * next-token loss
    teacher: str | None = None  # a workbench run dir or .ckpt file; hf:<dir> for a `transformers` causal LM
    teacher_model: Any = None  # teacher null: a preset name or model keys on top of the student's, trained first
    teacher_steps: int = integer(1000, 1)
    teacher_seed: int = integer(0, 0)
    # the teacher's optim.lr; null: the student's. A grid that tunes the student's rate (ablation.lrs) sets it, so
    # every rate distils from the same teacher (one planned job) rather than one teacher per rate
    teacher_lr: float | None = number(None, above=True, null=True)
    cache: bool = False  # sampled only: precompute the targets of every training batch once, on disk
    cache_dir: str | None = None  # trained teachers and cached targets; null: beside data.cache_dir
    # kind on_policy (workbench/on_policy.py, GKD): the first round(on_policy_mix x batch) rows of each batch are
    # their first prompt_len tokens continued by new_tokens the student samples; the loss there is the generalized
    # JSD to the teacher (beta 0: forward KL, 1: reverse KL) over the vocabulary or the teacher's top k (support);
    # the other rows get `off_policy` (none: the next-token loss; else that kind, mixed with alpha as above)
    on_policy_mix: float = unit(0.5)
    beta: float = unit(0.5)
    prompt_len: int = integer(32, 1)
    new_tokens: int = integer(32, 1)
    temperature: float = number(1.0, above=True)  # sampling temperature, and the divergence's
    sample_top_k: int | None = integer(None, 1, null=True)  # sample among the student's top k; null: all
    support: Support = Support.full
    off_policy: OffPolicyKind = OffPolicyKind.none


@dataclass
class LongContextConfig:
    """Loss by position bucket and passkey accuracy vs distance after training (results.json["long_context"])."""

    buckets: int = integer(0, 0)  # equal position buckets of data.seq_len; 0: no evaluation
    passkey_distances: list[int] = field(default_factory=list)
    passkey_samples: int = integer(64, 1)
    passkey_digits: int = integer(5, 1)


@dataclass
class AblationConfig:
    """An ablation grid (`+ablation=<name>`) fills this in; a single run leaves it as is.

    Arms are `arms` (name -> {dotted.key: value}) plus the product of `factors` (factor -> level -> keys; an arm
    is one level of each factor, named `<level>_<level>`). Both go through this schema: a key it lacks is an error.
    """

    name: str = text("adhoc")  # names the multirun dir: multirun/<name>/<run id>
    arm: str | None = None  # the arm this job runs
    baseline: str | None = None
    control: str | None = None  # an arm that must come out `worse` if the design can see the factor
    factor: str | None = None
    # what the arms are compared on: a final value, steps_to:, solved: or auc: (workbench.measures)
    metric: str = ranged("val_loss", measures.ALLOWED, measures.is_metric)
    smooth: int = integer(measures.SMOOTH, 1)  # steps_to: the running mean over this many logged points
    eval_average: int | None = integer(None, 1, null=True)  # final values: the mean of the last k evaluations
    aa: bool = False  # true: an A/A arm, the baseline's config as `<baseline>_aa`, which must not differ from it
    margin: float | None = number(None, null=True)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lrs: list[float] = field(default_factory=list)  # every arm at every rate (optim.lr); empty: the config's rate
    bracket: bool = True  # with lrs: an arm whose best rate is at an edge of those tried gets the next rate beyond
    to_divergence: bool = False  # with lrs and bracket: each arm's top rate goes up until it diverges or lr_bounds
    stable_within: float | None = number(None, null=True)  # max_stable_lr: within this of the arm's best (metric units)
    lr_bounds: list[float] = ranged([1.0e-6, 10.0], "two numbers 0 < low < high",  # noqa: RUF009 (bracketing's)
                                    lambda v: len(v) == 2 and 0 < v[0] < v[1])  # fmt: skip
    max_seeds: int | None = integer(None, 2, null=True)  # seeds until decided, up to this many; null: seeds only
    seed_step: int | None = integer(None, 1, null=True)  # seeds added per look; null: as many as the first round
    pilot_seeds: int | None = integer(None, 2, null=True)  # the baseline (and control) at this many seeds first: power
    underpowered: Underpowered = Underpowered.stop  # a design that cannot decide at its margin: stop, or run anyway
    arms: dict[str, Any] = field(default_factory=dict)
    factors: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)  # named values the grid's keys interpolate
    compute_budget: float | None = None  # an IsoFLOP ladder's budget label (analysis.scaling's Approach 2)
    quick: bool = False  # true: quick_overrides (the `tiny` preset, a few steps) and quick_seeds
    quick_seeds: list[int] = field(default_factory=lambda: [0, 1])
    quick_overrides: dict[str, Any] = field(default_factory=lambda: dict(QUICK_OVERRIDES))


QUICK_OVERRIDES = {
    "model": "tiny", "data.seq_len": 64, "data.batch_size": 4, "data.val_tokens": 1024, "trainer.max_steps": 4,
    "trainer.val_check_interval": 4, "trainer.log_every_n_steps": 1, "trainer.throughput_window": 2,
    "trainer.progress_bar": False, "optim.warmup_steps": 1, "logger.kind": "none",
    "ablation.bracket": False,  # a few steps cannot place an optimum; a quick grid runs as written
    "ablation.max_seeds": None,  # nor can they decide anything: no seeds added in rounds
}  # fmt: skip


RESUME = "true (continue from <run dir>/checkpoints/last.ckpt), false, or the path of an existing .ckpt file"


@dataclass
class TrainConfig:
    model: Any = MISSING  # a ModelSchema (presets: the `model` group)
    data: DataConfig = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # before optim, whose total_steps follows it
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    long_context: LongContextConfig = field(default_factory=LongContextConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    seed: int = integer(0, 0)
    # true: continue from <run dir>/checkpoints/last.ckpt (fresh start if none); or a checkpoint path
    resume: Any = ranged(False, RESUME, lambda v: v is None or isinstance(v, bool)  # noqa: RUF009
                         or (isinstance(v, str) and Path(v).expanduser().is_file()))  # fmt: skip
    kv_reference_context: int = integer(32768, 1)  # context at which results.json reports KV-cache bytes
    dry_run: bool = False  # true: price the plan (every job, dependencies included) and exit without training
    threads: int | None = integer(None, 1, null=True)  # torch threads per job; null: CPUs / parallel jobs
    # weights only to start from: a run dir or .ckpt path, or a map of dotted overrides naming a first stage of
    # this config, planned as a job of its own and trained first (training.plan)
    init_from: Any = None


SCHEMA_NAME = "train_schema"


def register() -> None:
    """The schema, the presets (group `model`) and the data sources (group `data`) in Hydra's ConfigStore."""
    cs = ConfigStore.instance()
    cs.store(name=SCHEMA_NAME, node=TrainConfig)
    for name, cfg in PRESETS.items():
        cs.store(group="model", name=name, node=model_node(cfg))
    for name, cls in DATA_SOURCES.items():
        cs.store(group="data", name=name, node=cls)


def field_errors(obj: Any, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, value, allowed) for every field of `obj` (a schema dataclass, nested) outside its range."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += field_errors(value, f"{prefix}{f.name}.")
        elif (check := f.metadata.get("check")) is not None:
            try:
                ok = bool(check(value))
            except TypeError:  # a value of the wrong type (an untyped field): not allowed
                ok = False
            if not ok:
                out.append((f"{prefix}{f.name}", value, f.metadata["allowed"]))
    return out


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def allowed_words(schema: type | None, key: str) -> str | None:
    """What `schema`'s field `key` allows, in words: its `allowed` metadata, else its choices or type."""
    if schema is None or not dataclasses.is_dataclass(schema):
        return None
    f = next((f for f in dataclasses.fields(schema) if f.name == key), None)
    if f is None:
        return None
    hint = typing.get_type_hints(schema)[key]
    if f.metadata.get("allowed"):
        return f.metadata["allowed"]
    return ", ".join(hint) if isinstance(hint, type) and issubclass(hint, StrEnum) else TYPE_WORDS.get(hint)
