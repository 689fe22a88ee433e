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

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd
import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tabulate import tabulate

from analysis.cli import InputError, Parser, at_least, user_errors
from workbench.checkpoints import CONFIG_FILE, CorruptCheckpointError, checkpoint_file, load_model_from_checkpoint
from workbench.long_context import check_buckets, check_passkey, evaluate, val_batches


def from_runs(runs: pd.DataFrame, part: str, keys: Sequence[str] = ("ablation.arm", "seed")) -> pd.DataFrame:
    """One row per (run, bucket or distance) from `analysis.runs.load`'s `long_context.<part>` column."""
    column = f"long_context.{part}"
    if column not in runs:
        raise ValueError(f"part: no column {column!r} in the runs; allowed parts: position_buckets, passkey")
    frames = [pd.DataFrame(records).assign(**{k: run[k] for k in keys})
              for _, run in runs.iterrows() if isinstance(records := run[column], list) and records]  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _run_config(path: Path) -> Any:
    """The run's resolved config.yaml beside the checkpoint (its data and seed)."""
    config = checkpoint_file(path).parent.parent / CONFIG_FILE
    if not config.is_file():
        raise InputError(f"run: got {str(path)!r}, whose run has no {config} to read the data config from; "
                         "allowed: a workbench run dir, or a .ckpt inside one")  # fmt: skip
    try:
        cfg = OmegaConf.load(config)
        return cfg if "data" in cfg and "seed" in cfg else _not_a_run_config(config)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as e:
        raise InputError(f"run: {config} is not a run's config.yaml ({' '.join(str(e).split())})") from e


def _not_a_run_config(config: Path) -> NoReturn:
    raise InputError(f"run: {config} has no data or seed; allowed: a run's config.yaml (written by every run)")


NAMES = {"buckets": "--buckets", "distances": "--distances", "samples": "--samples", "n_digits": "passkey digits"}


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.long_context", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run dir (its checkpoints/last.ckpt) or a .ckpt inside a run dir")
    parser.add_argument("--context", type=int, required=True, help="tokens per evaluated sequence")
    parser.add_argument("--distances", type=int, nargs="*", default=[], help="passkey key-query distances")
    parser.add_argument("--buckets", type=int, default=8, help="equal position buckets of the context")
    parser.add_argument("--samples", type=int, default=64, help="passkey sequences per distance")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    with user_errors(FileNotFoundError, CorruptCheckpointError, ValueError):  # each names the file or flag
        at_least("--context", args.context, 1)
        check_buckets(args.buckets, args.context, NAMES)
        device = _device(args.device)
        cfg = _run_config(args.run)
        model = load_model_from_checkpoint(args.run).to(device)
        if args.distances:
            check_passkey(args.distances, args.context, args.samples, 5, model.cfg.vocab_size, NAMES)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        batches = val_batches(data, args.context, cfg.seed)
    out = evaluate(model, batches, args.buckets, args.distances, args.samples)
    print(f"{args.run}: val loss by position at context {args.context:,} ({data['source']} val split)")
    buckets = pd.DataFrame(out["position_buckets"])
    rows = [[f"{r.start}-{r.end - 1}", f"{r.loss:.4f}", r.tokens] for r in buckets.itertuples()]
    print(tabulate(rows, ["positions", "loss", "tokens"], intfmt=","))
    if out["passkey"]:
        print(f"\npasskey retrieval, {args.samples} sequences of {args.context:,} tokens per distance")
        rows = [[r.distance, f"{r.digit_accuracy:.3f}", f"{r.exact_match:.3f}"]
                for r in pd.DataFrame(out["passkey"]).itertuples()]  # fmt: skip
        print(tabulate(rows, ["distance", "digit accuracy", "exact match"], intfmt=","))


def _device(name: str) -> torch.device:
    """`--device` as torch names it, present on this machine."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InputError(f"--device: got {name!r}; allowed: cpu, cuda, cuda:<index>, mps") from e
    present = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not present.get(device.type, False):
        here = ", ".join(k for k, v in present.items() if v)
        raise InputError(f"--device: got {name!r}, which this machine does not have; allowed here: {here}")
    return device


if __name__ == "__main__":
    main()
