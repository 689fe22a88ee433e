"""The step-0 attention temperature of a run: the largest |attention logit| its model scores on its first training
batch, before any update, as the stability monitor measures it at step 0 (`workbench.probes`, the probes that log
`stability/max_logit/layer*`). softcap_vs_qknorm's arm `none_hot` starts `none` at QK-norm's peak: without QK-norm
every logit is `model.query_pre_attn_scalar ** -0.5` times q·k, so a scalar of head_dim / t² multiplies every
logit, the peak included, by t (`matching_scalar`).

```bash
python -m analysis.attention_temperature +ablation=softcap_vs_qknorm experiment=study_cpu --arms none qk_norm
```

prints each arm's mean step-0 peak over seeds 0-15 and the fitted scalar (`fitted_scalar`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from workbench.config import ModelConfig
from workbench.data import build_data
from workbench.probes import attach_probes, detach_probes
from workbench.training.compose import compose_train
from workbench.training.grid import resolve_arm
from workbench.training.module import LMModule

DEFAULT_SEEDS = tuple(range(16))  # none's peak varies 6% over seeds (SD 0.017 of 0.27): its mean to 1.6%


def step0_peak(cfg: DictConfig) -> float:
    """The peak |attention logit| over every layer, head and visible pair at step 0 of the run `cfg` describes (its
    arm applied): seeded, data built and model built in `training.run`'s order, so the weights and the batch are the
    ones that run's stability monitor logs at step 0; scored in float32 as the monitor scores them."""
    model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    L.seed_everything(int(cfg.seed), verbose=False)
    bundle = build_data(cfg.data, int(cfg.seed))
    module = LMModule(model_cfg, cfg.optim, bundle.token_bytes)
    x, _ = bundle.train(0)
    attention, _ = attach_probes(module.model)
    try:
        with torch.no_grad():
            module.model(x)
    finally:
        detach_probes(module.model)
    return max(float(p.max_logit) for p in attention)


def arm_config(overrides: Sequence[str], arm: str, seed: int) -> DictConfig:
    """The composed config of one arm and seed of a grid given by command-line `overrides`."""
    return resolve_arm(compose_train([*overrides, f"ablation.arm={arm}", f"seed={seed}"]))


def step0_peaks(overrides: Sequence[str], arm: str, seeds: Sequence[int] = DEFAULT_SEEDS) -> np.ndarray:
    """`step0_peak` of `arm` at each of `seeds`."""
    return np.array([step0_peak(arm_config(overrides, arm, s)) for s in seeds])


def matching_scalar(cold: np.ndarray, hot: np.ndarray, head_dim: int) -> float:
    """The `model.query_pre_attn_scalar` that moves an arm without QK-norm whose peaks at the default scalar
    (head_dim) are `cold` to a mean peak equal to the mean of `hot`: its logits are head_dim ** -0.5 q·k, so a
    scalar s makes them (head_dim / s) ** 0.5 times larger, and (head_dim / s) ** 0.5 = mean(hot) / mean(cold)."""
    means = float(np.mean(cold)), float(np.mean(hot))
    if not all(np.isfinite(m) and m > 0 for m in means):
        raise ValueError(f"peaks: got means {means[0]!r} and {means[1]!r}; allowed: positive, finite peaks")
    return head_dim / (means[1] / means[0]) ** 2


def fitted_scalar(overrides: Sequence[str], cold_arm: str, hot_arm: str, seeds: Sequence[int] = DEFAULT_SEEDS,
                  rounds: int = 2) -> tuple[float, dict[str, np.ndarray]]:  # fmt: skip
    """The `model.query_pre_attn_scalar` at which `cold_arm` (no QK-norm) starts at `hot_arm`'s mean step-0 peak,
    and the peaks measured on the way. Only the first layer's logits scale exactly with the query scale (a hotter
    first layer sharpens what later layers see), so after `matching_scalar`'s first guess each round measures the
    cold arm at the guess and corrects it the same way, its peaks read as if at the default scale."""
    hot, cold = step0_peaks(overrides, hot_arm, seeds), step0_peaks(overrides, cold_arm, seeds)
    head_dim = ModelConfig.from_dict(
        OmegaConf.to_container(arm_config(overrides, cold_arm, seeds[0]).model, resolve=True)
    ).resolved_head_dim
    scalar, peaks = matching_scalar(cold, hot, head_dim), {hot_arm: hot, cold_arm: cold}
    for _ in range(rounds - 1):
        warm = step0_peaks([*overrides, f"model.query_pre_attn_scalar={scalar!r}"], cold_arm, seeds)
        peaks[f"{cold_arm} at {scalar:.4g}"] = warm
        scalar = matching_scalar(warm * (scalar / head_dim) ** 0.5, hot, head_dim)
    return scalar, peaks


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.attention_temperature", description=__doc__.split("\n")[0]
    )
    parser.add_argument("overrides", nargs="+", help="the grid's overrides, e.g. +ablation=softcap_vs_qknorm")
    parser.add_argument("--arms", nargs=2, default=["none", "qk_norm"], metavar=("COLD", "HOT"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    args = parser.parse_args(argv)
    scalar, peaks = fitted_scalar(args.overrides, *args.arms, args.seeds)
    for name, values in peaks.items():
        print(f"{name}: step-0 peak logit {values.mean():.4g} (seed SD {values.std(ddof=1):.3g}, {len(values)} seeds)")
    print(f"model.query_pre_attn_scalar={scalar:.4g}")


if __name__ == "__main__":
    main()
