"""A run's plan: the jobs it needs, dependencies first, made before anything trains.

A distillation teacher given as `distill.teacher_model` and a first stage given as an `init_from` map of overrides
are jobs of their own, with a run dir named by their config's id: `<distill cache>/teachers/<id>` and
`<parent of the run dir>/stages/<id>`, so every run (and grid) that asks for the same one shares it. The run then
gets their run dirs as explicit inputs (`Job.inputs`) and never trains anything but its own model. The dry run
prices a plan, the CLI validates every job of it, and `training.jobs` executes it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from workbench.presets import get_preset
from workbench.training.grid import apply, run_id
from workbench.training.schema import DistillConfig, model_node

STAGES, TEACHERS = "stages", "teachers"


@dataclass(frozen=True)
class Job:
    what: str  # "run", "distill.teacher_model", "init_from (first stage)": named in errors and the dry run
    cfg: DictConfig  # the job's config, its arm applied
    run_dir: Path
    inputs: dict[str, str] = field(default_factory=dict)  # "teacher" / "init_from": a run dir, .ckpt or hf:<dir>


def plan(cfg: DictConfig, run_dir: str | Path, what: str | None = None) -> list[Job]:
    """Every job this run needs, each once, dependencies before their dependents; the run itself last (`what`
    names it, by default its arm)."""
    jobs: list[Job] = []
    inputs: dict[str, str] = {}
    d = cfg.distill
    if d.kind != "none":
        if d.teacher is None:
            teacher = teacher_config(cfg)
            jobs += plan(teacher, distill_cache_dir(cfg) / TEACHERS / run_id(teacher), "distill.teacher_model")
            inputs["teacher"] = str(jobs[-1].run_dir)
        else:
            inputs["teacher"] = str(d.teacher)
    if isinstance(cfg.init_from, DictConfig):
        stage = stage_config(cfg)
        jobs += plan(stage, Path(run_dir).parent / STAGES / run_id(stage), "init_from (first stage)")
        inputs["init_from"] = str(jobs[-1].run_dir)
    elif cfg.init_from is not None:
        inputs["init_from"] = str(cfg.init_from)
    unique = list({job.run_dir: job for job in jobs}.values())
    what = what or ("run" if cfg.ablation.arm is None else f"arm {cfg.ablation.arm}")
    return [*unique, Job(what, cfg, Path(run_dir), inputs)]


def distill_cache_dir(cfg: DictConfig) -> Path:
    """`distill.cache_dir`, else `distill` beside the token cache, so a test's tmp cache keeps both."""
    if cfg.distill.cache_dir:
        return Path(cfg.distill.cache_dir)
    return Path(cfg.data.get("cache_dir") or ".cache/workbench/tokens").parent / "distill"


def teacher_config(cfg: DictConfig) -> DictConfig:
    """The config that trains `distill.teacher_model`: the student's data (as resolved), optimiser and trainer,
    with the teacher's model, steps, seed and (`distill.teacher_lr`, when set) rate, no tracker and no distillation
    of its own."""
    d = cfg.distill
    out = copy.deepcopy(cfg)
    if isinstance(d.teacher_model, str):
        out.model = model_node(get_preset(d.teacher_model))
    else:
        apply(out, {f"model.{k}": v for k, v in d.teacher_model.items()}, "distill.teacher_model")
    for key in out.data:  # data.seq_len may follow model.max_seq_len: the student's value
        if OmegaConf.is_interpolation(out.data, key):
            out.data[key] = cfg.data[key]
    out.distill = DistillConfig()
    out.trainer.max_steps = out.optim.total_steps = d.teacher_steps
    out.seed = d.teacher_seed
    if d.teacher_lr is not None:
        out.optim.lr = d.teacher_lr
    out.init_from = None  # the student's starting weights are not the teacher's
    out.logger.kind = "none"
    out.ablation.arm = None
    out.ablation.name = "teacher"
    return out


def stage_config(cfg: DictConfig) -> DictConfig:
    """The first stage `init_from: {dotted.key: value}` names: this config with the overrides applied."""
    overrides = OmegaConf.to_container(cfg.init_from, resolve=True)  # against this config, before it changes
    stage = copy.deepcopy(cfg)
    apply(stage, overrides, "init_from (first stage)")
    stage.init_from = None
    stage.resume = False
    stage.ablation.arm = None  # not an arm of the grid: reports skip it
    stage.logger.job_type = "first_stage"  # W&B: not one of the arm's runs either
    return stage
