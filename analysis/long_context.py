"""`python -m analysis.long_context <run dir or .ckpt> --context N --distances ...`: how a model uses a long context.

Two measurements, as in the context-extension papers (position interpolation, YaRN):
- loss by position bucket: mean next-token loss on the run's val split at `context` tokens per sequence, in equal
  buckets of positions; a model that extends well keeps (or lowers) its loss past its pre-training context.
- passkey retrieval vs distance: `workbench.data.passkey`'s task (fixed seed per distance), greedy accuracy of the
  key's digits after the query, each digit predicted from the true prefix (teacher forcing), and the fraction of
  sequences with every digit right.
Training runs write both into results.json["long_context"] when `long_context.buckets` > 0 (workbench.long_context
measures; this module is the command line and reads the runs' records back).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from omegaconf import OmegaConf
from tabulate import tabulate

from workbench.checkpoints import CONFIG_FILE, checkpoint_file, load_model_from_checkpoint
from workbench.long_context import evaluate, val_batches


def from_runs(runs: pd.DataFrame, part: str, keys: Sequence[str] = ("ablation.arm", "seed")) -> pd.DataFrame:
    """One row per (run, bucket or distance) from `analysis.runs.load`'s `long_context.<part>` column."""
    column = f"long_context.{part}"
    if column not in runs:
        raise ValueError(f"part: no column {column!r} in the runs; allowed parts: position_buckets, passkey")
    frames = [pd.DataFrame(records).assign(**{k: run[k] for k in keys})
              for _, run in runs.iterrows() if isinstance(records := run[column], list) and records]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run_config(path: Path) -> Any:
    config = checkpoint_file(path).parent.parent / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"{path}: no {config} to read the run's data config from")
    return OmegaConf.load(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.long_context", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run dir (its checkpoints/last.ckpt) or a .ckpt inside a run dir")
    parser.add_argument("--context", type=int, required=True, help="tokens per evaluated sequence")
    parser.add_argument("--distances", type=int, nargs="*", default=[], help="passkey key-query distances")
    parser.add_argument("--buckets", type=int, default=8, help="equal position buckets of the context")
    parser.add_argument("--samples", type=int, default=64, help="passkey sequences per distance")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    cfg = _run_config(args.run)
    model = load_model_from_checkpoint(args.run).to(args.device)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    out = evaluate(model, val_batches(data, args.context, cfg.seed), args.buckets, args.distances, args.samples)
    print(f"{args.run}: val loss by position at context {args.context:,} ({data['source']} val split)")
    buckets = pd.DataFrame(out["position_buckets"])
    rows = [[f"{r.start}-{r.end - 1}", f"{r.loss:.4f}", r.tokens] for r in buckets.itertuples()]
    print(tabulate(rows, ["positions", "loss", "tokens"], intfmt=","))
    if out["passkey"]:
        print(f"\npasskey retrieval, {args.samples} sequences of {args.context:,} tokens per distance")
        rows = [[r.distance, f"{r.digit_accuracy:.3f}", f"{r.exact_match:.3f}"]
                for r in pd.DataFrame(out["passkey"]).itertuples()]  # fmt: skip
        print(tabulate(rows, ["distance", "digit accuracy", "exact match"], intfmt=","))


if __name__ == "__main__":
    main()
