"""One training run from a resolved config: validate, build data and model, fit, and leave results in the run dir."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from analysis.kv_cache import kv_cache_bytes
from analysis.params import count_params
from workbench.config import ModelConfig
from workbench.data import DataBundle, build_data
from workbench.data.datamodule import BundleDataModule
from workbench.training.checkpoint_io import AtomicCheckpointIO
from workbench.training.loggers import build_loggers, wandb_location
from workbench.training.module import LMModule
from workbench.training.results import CONFIG_FILE, RESULTS_FILE, environment, git_state, write_json_atomic
from workbench.training.throughput import TokenThroughput

CHECKPOINTS = "checkpoints"


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train as `cfg` says and return results.json's content; a failure is recorded there, then re-raised."""
    model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))  # before any compute
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / CONFIG_FILE, resolve=True)
    base = {"run_dir": str(run_dir.resolve()), "seed": cfg.seed, "params": count_params(model_cfg),
            "kv_cache_bytes": kv_cache_bytes(model_cfg, cfg.kv_reference_context),
            "kv_reference_context": cfg.kv_reference_context, **git_state()}  # fmt: skip
    start = time.perf_counter()
    try:
        results = {**base, **_fit(cfg, model_cfg, run_dir), "status": "completed", "error": None}
    except BaseException as e:
        failed = {**base, **environment("cpu"), "status": "failed", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc(), "wall_time_s": time.perf_counter() - start}  # fmt: skip
        write_json_atomic(run_dir / RESULTS_FILE, failed)
        raise
    results["wall_time_s"] = time.perf_counter() - start
    write_json_atomic(run_dir / RESULTS_FILE, results)
    return results


def resume_checkpoint(resume: bool | str | None, run_dir: Path) -> str | None:
    """`true`: the run dir's last.ckpt when there is one (else a fresh start); a string: that checkpoint."""
    if resume in (None, False):
        return None
    if resume is True:
        last = run_dir / CHECKPOINTS / "last.ckpt"
        return str(last) if last.exists() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"resume: checkpoint {resume} does not exist")
    return str(resume)


def _fit(cfg: DictConfig, model_cfg: ModelConfig, run_dir: Path) -> dict[str, Any]:
    t = cfg.trainer
    L.seed_everything(cfg.seed, verbose=False)
    bundle = build_data(cfg.data, cfg.seed)
    if bundle.vocab_size > model_cfg.vocab_size:
        raise ValueError(
            f"model.vocab_size: got {model_cfg.vocab_size}; the data uses {bundle.vocab_size} ids, "
            f"set model.vocab_size={bundle.vocab_size} or more"
        )
    module = LMModule(model_cfg, cfg.optim, bundle.token_bytes, compile=t.compile)
    x, _ = bundle.train(0)
    module.set_flops_per_batch(*x.shape)
    ckpt_path = resume_checkpoint(cfg.resume, run_dir)
    resume_step = torch.load(ckpt_path, map_location="cpu", weights_only=False)["global_step"] if ckpt_path else None
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loggers = build_loggers(cfg.logger, run_dir, {**resolved, "data_info": bundle.info}, resume_step)
    throughput = TokenThroughput(window_size=t.throughput_window, peak_flops=t.peak_flops)
    checkpoint = ModelCheckpoint(dirpath=run_dir / CHECKPOINTS, filename="best", monitor="val/loss", mode="min",
                                 save_top_k=1, save_last=True, auto_insert_metric_name=False)  # fmt: skip
    callbacks = [checkpoint, throughput] + ([RichProgressBar()] if t.progress_bar else [])
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=1, precision=t.precision, max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        val_check_interval=t.val_check_interval * t.accumulate_grad_batches, check_val_every_n_epoch=None,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0, logger=loggers, callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=run_dir, enable_model_summary=False, enable_progress_bar=t.progress_bar,
    )  # fmt: skip
    dm = BundleDataModule(bundle, t.accumulate_grad_batches)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    # the last validation is stale, or (resumed from the final checkpoint) never ran here: score the final weights
    if trainer.global_step % t.val_check_interval or "val/loss" not in trainer.callback_metrics:
        trainer.validate(module, datamodule=dm, verbose=False)
    return _summary(trainer, module, bundle, throughput, loggers, x.numel())


def _summary(
    trainer: L.Trainer, module: LMModule, bundle: DataBundle, throughput: TokenThroughput, loggers: list, tokens: int
) -> dict[str, Any]:
    m = {k: float(v) for k, v in trainer.callback_metrics.items()}
    speed = throughput.latest()
    return {
        "train_loss": module.last_train_loss, "val_loss": m.get("val/loss"), "val_bpb": m.get("val/bpb"),
        "val_accuracy": m.get("val/accuracy"), "steps": trainer.global_step,
        "tokens_seen": trainer.global_step * trainer.accumulate_grad_batches * tokens,
        "tokens_per_s": speed.get("lengths", 0) / speed["time"] if speed.get("time") else None,
        "mfu": speed.get("mfu"), "flops_per_batch": module.flops_per_batch,
        "peak_flops": throughput.available_flops, "precision": str(trainer.precision), "data": bundle.info,
        "checkpoints": {"last": _path(trainer, "last_model_path"), "best": _path(trainer, "best_model_path")},
        "wandb": wandb_location(loggers), **environment(trainer.strategy.root_device),
    }  # fmt: skip


def _path(trainer: L.Trainer, attr: str) -> str | None:
    return getattr(trainer.checkpoint_callback, attr) or None
