"""One training run from a validated config and its plan's inputs: build data and model, fit, leave results in the
run dir. It trains nothing but its own model (a teacher or a first stage is a job of the plan: `training.plan`).
Its loggers: a CSV of every metric always (`metrics.csv` in the run dir), plus W&B unless `logger=none`/`csv`."""

from __future__ import annotations

import csv
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from workbench.accounting import kv_cache_bytes, param_counts
from workbench.blocks.documents import DocumentMasking
from workbench.checkpoints import CHECKPOINTS, CONFIG_FILE, LAST, checkpoint_file, load_weights
from workbench.config import ModelConfig
from workbench.data import DataBundle, build_data
from workbench.data.datamodule import BundleDataModule
from workbench.distill import Distiller, HFTeacher, cached_targets, load_teacher
from workbench.evaluate import mean_loss
from workbench.long_context import accuracy_by_distance, evaluate
from workbench.on_policy import OnPolicy
from workbench.peak import peak_flops
from workbench.precision import device_type, resolve_precision
from workbench.training.checkpoint_io import AtomicCheckpointIO, checkpoint_step, newest_sound_checkpoint
from workbench.training.module import LMModule
from workbench.training.plan import distill_cache_dir
from workbench.training.results import RESULTS_FILE, environment, git_state, write_json_atomic
from workbench.training.stability import StabilityMonitor
from workbench.training.strategy import build_strategy, check_launch


def run(cfg: DictConfig, run_dir: str | Path, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """Train as `cfg` (validated: `training.validate`) says, starting from and distilling from the plan's `inputs`
    ("init_from", "teacher"); return results.json's content. A failure is recorded there, then re-raised."""
    inputs = inputs or {}
    model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    t = cfg.trainer
    precision, why = resolve_precision(str(t.precision), str(t.accelerator))
    where = {"device": device_type(str(t.accelerator))}  # what Lightning will pick; the Trainer's own once it exists
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # under DDP/FSDP every rank runs this; one writes the run dir's files
        # `trainer.precision: auto` as resolved here (a run id treats the two alike): the file says what ran
        OmegaConf.save(OmegaConf.merge(cfg, {"trainer": {"precision": precision}}), run_dir / CONFIG_FILE, resolve=True)
    base = {"run_dir": str(run_dir.resolve()), "seed": cfg.seed, "params": param_counts(model_cfg),
            "kv_cache_bytes": kv_cache_bytes(model_cfg, cfg.kv_reference_context),
            "kv_reference_context": cfg.kv_reference_context, "precision": precision, "precision_reason": why,
            **git_state()}  # fmt: skip
    start = time.perf_counter()
    try:
        results = {**base, **_fit(cfg, model_cfg, run_dir, inputs, precision, where), "status": "completed",
                   "error": None}  # fmt: skip
    except BaseException as e:
        failed = {**base, **environment(where["device"]), "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "failed_step": getattr(e, "step", None),  # where a NaN/inf loss appeared (NonFiniteLossError)
                  "traceback": traceback.format_exc(), "wall_time_s": time.perf_counter() - start}  # fmt: skip
        if rank_zero_only.rank == 0:
            write_json_atomic(run_dir / RESULTS_FILE, failed)
        finish_wandb(exit_code=1)
        raise
    finish_wandb()
    results["wall_time_s"] = time.perf_counter() - start
    if rank_zero_only.rank == 0:
        write_json_atomic(run_dir / RESULTS_FILE, results)
    return results


def resume_checkpoint(resume: bool | str | None, run_dir: Path) -> tuple[str, int] | tuple[None, None]:
    """(checkpoint, its step) to resume from. `true`: the run dir's last.ckpt, or the one it replaced when last.ckpt
    is corrupt (warned), or a fresh start when there is none; a string: that checkpoint. Corrupt ones never load."""
    if resume in (None, False):
        return None, None
    if resume is True:
        found = newest_sound_checkpoint(run_dir / LAST)
        return (str(found[0]), found[1]) if found else (None, None)
    path = Path(resume).expanduser()  # a path: the schema (`resume`) checked it exists, `~` expanded
    return str(path), checkpoint_step(path)


def _fit(
    cfg: DictConfig, model_cfg: ModelConfig, run_dir: Path, inputs: dict[str, str], precision: str, where: dict
) -> dict[str, Any]:
    t = cfg.trainer
    parallel = build_strategy(t)
    init = checkpoint_file(inputs["init_from"]) if "init_from" in inputs else None
    L.seed_everything(cfg.seed, verbose=False)
    bundle = build_data(cfg.data, cfg.seed)
    if bundle.vocab_size > model_cfg.vocab_size:
        raise ValueError(
            f"model.vocab_size: got {model_cfg.vocab_size}; the data uses {bundle.vocab_size} ids, "
            f"set model.vocab_size={bundle.vocab_size} or more"
        )
    distiller = build_distiller(cfg, model_cfg, bundle, inputs.get("teacher"), distill_cache_dir(cfg))
    documents = document_masking(cfg.data, bundle)
    module = LMModule(model_cfg, cfg.optim, bundle.token_bytes, compile=t.compile, distiller=distiller,
                      documents=documents, answers_only=bundle.answers_only)  # fmt: skip
    if init is not None:
        load_weights(module.model, init)
    x, _ = bundle.train(0)
    ckpt_path, resume_step = resume_checkpoint(cfg.resume, run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    loggers = build_loggers(cfg.logger, run_dir, {**resolved, "data_info": bundle.info}, resume_step)
    throughput = TokenThroughput(window_size=t.throughput_window, peak_flops=t.peak_flops)
    checkpoint = ModelCheckpoint(dirpath=run_dir / CHECKPOINTS, filename="best", monitor="val/loss", mode="min",
                                 save_top_k=1, save_last=True, auto_insert_metric_name=False)  # fmt: skip
    stability = StabilityMonitor(t.monitor_every)
    callbacks = [checkpoint, throughput, stability] + ([RichProgressBar()] if t.progress_bar else [])
    trainer = L.Trainer(
        accelerator=str(t.accelerator), **parallel, precision=precision, max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        val_check_interval=t.val_check_interval * t.accumulate_grad_batches, check_val_every_n_epoch=None,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0, logger=loggers, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir, enable_model_summary=False, enable_progress_bar=t.progress_bar,
    )  # fmt: skip
    where["device"] = str(trainer.strategy.root_device)
    if x.shape[0] % trainer.world_size:
        raise ValueError(f"data.batch_size: got {x.shape[0]}; allowed: a multiple of the world size "
                         f"{trainer.world_size} (trainer.devices x trainer.num_nodes)")  # fmt: skip
    check_launch(trainer)
    module.set_flops_per_batch(x.shape[0] // trainer.world_size, x.shape[1])  # per rank
    dm = BundleDataModule(bundle, t.accumulate_grad_batches)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    # the last validation is stale, or (resumed from the final checkpoint) never ran here: score the final weights
    if trainer.global_step % t.val_check_interval or "val/loss" not in trainer.callback_metrics:
        trainer.validate(module, datamodule=dm, verbose=False)
    lc = cfg.long_context  # loss by position bucket and passkey accuracy vs distance of the final weights
    return {**_summary(trainer, module, bundle, throughput, loggers, x.numel()),
            "selection_loss": mean_loss(module.model, bundle.selection, bundle.token_bytes, documents)["loss"],
            "init_from": str(init) if init else None,
            **({"long_context": evaluate(module.model, bundle.val, lc.buckets, list(lc.passkey_distances),
                                         lc.passkey_samples, lc.passkey_digits)} if lc.buckets else {}),
            **({"retrieval": {**accuracy_by_distance(module.model, bundle.val, bundle.info["distance_edges"]),
                              "chance_accuracy": bundle.info["chance_accuracy"]}}
               if cfg.data.source == "retrieval" else {}),
            "teacher": distiller.source if distiller else None}  # fmt: skip


def _summary(
    trainer: L.Trainer, module: LMModule, bundle: DataBundle, throughput: TokenThroughput, loggers: list, tokens: int
) -> dict[str, Any]:
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    speed = throughput.latest()
    return {
        "train_loss": m.get("train/loss", module.last_train_loss),  # the global batch's loss under DDP/FSDP
        "val_loss": m.get("val/loss"), "val_loss_se": m.get("val/loss_se"), "val_bpb": m.get("val/bpb"),
        "val_accuracy": m.get("val/accuracy"), "steps": trainer.global_step,
        "tokens_seen": trainer.global_step * trainer.accumulate_grad_batches * tokens,
        "tokens_per_s": speed.get("lengths", 0) * trainer.world_size / speed["time"] if speed.get("time") else None,
        "mfu": speed.get("mfu"), "flops_per_batch": module.flops_per_batch,  # one rank's batch
        "train_flops_per_token": module.flops_per_batch * trainer.world_size / tokens,  # workbench.accounting's
        "peak_flops": throughput.available_flops, "peak_flops_source": throughput.source,
        "precision": str(trainer.precision), "data": bundle.info,
        "strategy": type(trainer.strategy).__name__, "world_size": trainer.world_size,  # what Lightning ran
        "checkpoints": {k: getattr(trainer.checkpoint_callback, f"{k}_model_path") or None for k in ("last", "best")},
        "wandb": wandb_location(loggers), **environment(trainer.strategy.root_device),
    }  # fmt: skip


def document_masking(data: DictConfig, bundle: DataBundle) -> DocumentMasking | None:
    """`data.document_mask`: attention within each document packed in a window, split at the source's EOS."""
    if not data.get("document_mask"):
        return None
    if bundle.document_separator is None:  # validate.py refuses this before any data is read; kept for callers
        raise ValueError("data.document_mask: got true; allowed: false for a source that marks no document ends")
    return DocumentMasking(bundle.document_separator, str(data.document_positions))


def build_distiller(
    cfg: DictConfig, model_cfg: ModelConfig, bundle: DataBundle, spec: str | None, cache_root: Path
) -> Distiller | None:
    """None without distillation; else the teacher at `spec` (the plan's input), checked against the student's
    vocabulary."""
    d = cfg.distill
    if d.kind == "none":
        return None
    teacher = load_teacher(spec)
    head = teacher.model.get_output_embeddings() if isinstance(teacher, HFTeacher) else None
    if (vocab := teacher.cfg.vocab_size if head is None else head.weight.shape[0]) != model_cfg.vocab_size:
        raise ValueError(
            f"distill.teacher: {spec} has vocab_size {vocab}, the student's model.vocab_size is "
            f"{model_cfg.vocab_size}; teacher and student must share the tokenizer"
        )
    cached = None
    if d.cache:
        n_batches = cfg.trainer.max_steps * cfg.trainer.accumulate_grad_batches
        cached = cached_targets(teacher, bundle, n_batches, d.k, cfg.seed, cache_root)
    if d.kind != "on_policy":
        return Distiller(teacher, d.kind, d.k, d.alpha, cached, str(spec))
    on_policy = OnPolicy(d.on_policy_mix, d.beta, d.prompt_len, d.new_tokens, d.temperature, d.sample_top_k,
                         str(d.support), d.k, cfg.seed)  # fmt: skip
    return Distiller(teacher, str(d.off_policy), d.k, d.alpha, cached, str(spec), on_policy)


# --- loggers ---------------------------------------------------------------------------------------------------
def csv_logger(run_dir: Path, resume_step: int | None) -> CSVLogger:
    """Lightning deletes an existing metrics.csv; on resume, log again the rows logged before the checkpoint."""
    path = run_dir / "metrics.csv"
    kept: list[dict[str, str]] = []
    if resume_step is not None and path.exists():
        with path.open(newline="") as f:
            # a row's step counts the batches stepped before it: rows at resume_step and later come again
            kept = [row for row in csv.DictReader(f) if row.get("step") and int(float(row["step"])) < resume_step]
    logger = CSVLogger(save_dir=run_dir, name="", version="")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        logger.experiment  # noqa: B018 -- created now: this is where the old file is removed
    for row in kept:
        step = int(float(row.pop("step")))
        logger.log_metrics({k: _number(v) for k, v in row.items() if v != ""}, step=step)
    if kept:
        logger.save()
    return logger


def _number(text: str) -> int | float:
    """A CSV cell as the number it was logged as (Lightning writes an int as `3`, a float as `3.0`)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _previous_wandb_id(run_dir: Path) -> str | None:
    latest = run_dir / "wandb" / "latest-run"
    return latest.resolve().name.rsplit("-", 1)[-1] if latest.exists() else None


def build_loggers(cfg: DictConfig, run_dir: Path, config: dict[str, Any], resume_step: int | None) -> list[Logger]:
    loggers: list[Logger] = [csv_logger(run_dir, resume_step)]
    if cfg["kind"] == "wandb":
        finish_wandb()  # a grid worker's previous job, if it ended without: Lightning would log into its run
        run_id = _previous_wandb_id(run_dir) if resume_step is not None else None
        wandb = WandbLogger(
            project=cfg["project"], group=cfg["group"], job_type=cfg["job_type"], name=cfg["name"] or run_dir.name,
            tags=list(cfg["tags"]), save_dir=str(run_dir), offline=not os.environ.get("WANDB_API_KEY"),
            config=config, id=run_id, resume="allow" if run_id else None,
        )  # fmt: skip
        loggers.append(wandb)
    return loggers


def finish_wandb(exit_code: int = 0) -> None:
    """End this process's W&B run, if any: Lightning's WandbLogger never does, so the run's log stays open and a
    later run in the same process (a grid worker's next job) would log into it."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def wandb_location(loggers: list[Logger]) -> str | None:
    """The offline run folder (sync it with `wandb sync <folder>`) or the online URL."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            run = lg.experiment
            return run.url or str(Path(run.dir).parent)
    return None


# --- tokens/s and MFU: Lightning's public Throughput, timing the training steps only ------------------------------
class TokenThroughput(Callback):
    """Logs train/device/items_per_sec (tokens/s) and train/device/mfu (over the last `window_size` batches) at the
    trainer's log interval, and keeps the whole run's time, batches and tokens for results.json. Validation time is
    not training time: the clock pauses for it. MFU's peak: `workbench.peak` (`peak_flops` overrides it)."""

    def __init__(self, window_size: int, peak_flops: float | None = None) -> None:
        self.window_size, self.override = window_size, peak_flops
        self.available_flops: float | None = None
        self.source: str | None = None
        self.throughput: Throughput | None = None
        self.flops_per_batch: int | None = None
        self.batches = self.samples = self.tokens = 0
        self.elapsed, self.started = 0.0, None  # seconds trained before `started`, the running clock's start
        self.paused = False  # by a validation within fit (not by `trainer.validate` after it)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        device = trainer.strategy.root_device
        self.available_flops, self.source = peak_flops(device, str(trainer.precision), self.override)
        self.throughput = Throughput(available_flops=self.available_flops, world_size=trainer.world_size,
                                     window_size=self.window_size)  # fmt: skip
        self.flops_per_batch = getattr(pl_module, "flops_per_batch", None)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Counts start at zero on every (re)start: a resumed run measures its own steps."""
        self.batches = self.samples = self.tokens = 0
        self.elapsed, self.started = 0.0, time.perf_counter()

    def _clock(self) -> float:
        return self.elapsed + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        x = batch[0]
        self.batches, self.samples, self.tokens = self.batches + 1, self.samples + x.shape[0], self.tokens + x.numel()
        self.throughput.update(time=self._clock(), batches=self.batches, samples=self.samples, lengths=self.tokens,
                               flops=self.flops_per_batch)  # fmt: skip
        stepped = self.batches % trainer.accumulate_grad_batches == 0
        if stepped and trainer.global_step % trainer.log_every_n_steps == 0 and trainer.is_global_zero:
            metrics = {f"train/{k}": v for k, v in self.throughput.compute().items()}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step - 1)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.started is not None:  # within fit: pause the training clock
            self.elapsed, self.started, self.paused = self._clock(), None, True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.paused:
            self.started, self.paused = time.perf_counter(), False

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.elapsed, self.started = self._clock(), None

    def latest(self) -> dict[str, float]:
        """The whole run's (since (re)start) training time, batches and tokens, and its MFU (None: nothing ran)."""
        if not self.batches or not self.elapsed:  # resumed from its final checkpoint: nothing to measure
            return {}
        flops, peak = self.flops_per_batch, self.available_flops
        mfu = flops * self.batches / self.elapsed / peak if flops and peak else None
        return {"time": self.elapsed, "batches": self.batches, "lengths": self.tokens, "mfu": mfu}
