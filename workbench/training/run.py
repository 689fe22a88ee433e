"""One training run from a validated config and its plan's inputs: build data and model, fit, leave results in the
run dir. It trains nothing but its own model (a teacher or a first stage is a job of the plan: `training.plan`)."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from workbench.accounting import kv_cache_bytes, param_counts
from workbench.config import ModelConfig
from workbench.data import DataBundle, build_data
from workbench.data.datamodule import BundleDataModule
from workbench.long_context import evaluate
from workbench.training.checkpoint_io import AtomicCheckpointIO, checkpoint_step, newest_sound_checkpoint
from workbench.training.checkpoints import CHECKPOINTS, checkpoint_file, load_weights
from workbench.training.distillation import build_distiller
from workbench.training.evaluate import mean_loss
from workbench.training.loggers import build_loggers, finish_wandb, wandb_location
from workbench.training.module import LMModule
from workbench.training.plan import distill_cache_dir
from workbench.training.precision import device_type, resolve_precision
from workbench.training.results import CONFIG_FILE, RESULTS_FILE, environment, git_state, write_json_atomic
from workbench.training.stability import StabilityMonitor
from workbench.training.strategy import build_strategy, check_launch
from workbench.training.throughput import TokenThroughput


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
        OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)
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
        found = newest_sound_checkpoint(run_dir / CHECKPOINTS / "last.ckpt")
        return (str(found[0]), found[1]) if found else (None, None)
    if not Path(resume).is_file():
        raise FileNotFoundError(f"resume: checkpoint {resume} does not exist")
    return str(resume), checkpoint_step(resume)


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
    module = LMModule(model_cfg, cfg.optim, bundle.token_bytes, compile=t.compile, distiller=distiller)
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
    return {**_summary(trainer, module, bundle, throughput, loggers, x.numel()),
            "selection_loss": mean_loss(module.model, bundle.selection, bundle.token_bytes)["loss"],
            "init_from": str(init) if init else None, **_long_context(cfg.long_context, module, bundle),
            "teacher": distiller.source if distiller else None}  # fmt: skip


def _long_context(lc: DictConfig, module: LMModule, bundle: DataBundle) -> dict[str, Any]:
    """Loss by position bucket and passkey accuracy vs distance of the final weights, when `lc.buckets` > 0."""
    if not lc.buckets:
        return {}
    result = evaluate(module.model, bundle.val, lc.buckets, list(lc.passkey_distances), lc.passkey_samples,
                      lc.passkey_digits)  # fmt: skip
    return {"long_context": result}


def _summary(
    trainer: L.Trainer, module: LMModule, bundle: DataBundle, throughput: TokenThroughput, loggers: list, tokens: int
) -> dict[str, Any]:
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    speed = throughput.latest()
    return {
        "train_loss": m.get("train/loss", module.last_train_loss),  # the global batch's loss under DDP/FSDP
        "val_loss": m.get("val/loss"), "val_bpb": m.get("val/bpb"),
        "val_accuracy": m.get("val/accuracy"), "steps": trainer.global_step,
        "tokens_seen": trainer.global_step * trainer.accumulate_grad_batches * tokens,
        "tokens_per_s": speed.get("lengths", 0) * trainer.world_size / speed["time"] if speed.get("time") else None,
        "mfu": speed.get("mfu"), "flops_per_batch": module.flops_per_batch,  # one rank's batch
        "train_flops_per_token": module.flops_per_batch * trainer.world_size / tokens,  # workbench.accounting's
        "peak_flops": throughput.available_flops, "precision": str(trainer.precision), "data": bundle.info,
        "checkpoints": {"last": _path(trainer, "last_model_path"), "best": _path(trainer, "best_model_path")},
        "wandb": wandb_location(loggers), **environment(trainer.strategy.root_device),
    }  # fmt: skip


def _path(trainer: L.Trainer, attr: str) -> str | None:
    return getattr(trainer.checkpoint_callback, attr) or None
