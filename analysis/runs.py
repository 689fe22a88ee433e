"""The results store: every run's results and resolved config as one pandas DataFrame, one row per run.

Notebooks and reports read runs only through `load`, so the on-disk layout is known in one place. Sources:
- training run dirs: `results.json` (final metrics) + `config.yaml` (Hydra's resolved config; `.hydra/config.yaml`
  as a fallback) + `metrics.csv` (the curve, read by `load_metrics`). A dir with `metrics.csv` but no
  `results.json` is a run that never finished: it gets a row with status "incomplete". Run dirs nested in
  another run dir (a logger's own `metrics.csv`) are skipped.
- W&B run dirs (`wandb/offline-run-*`, `wandb/run-*`) with `files/{config.yaml,wandb-summary.json}` (what an
  online run leaves). Skipped when nested in a training run dir that has a `results.json` (authoritative); a run
  dir without one defers to its W&B runs. An offline run keeps its config and summary only in W&B's internal
  binary log, which is not read here: its run dir's `results.json` and `metrics.csv` hold the same numbers, and
  `wandb sync` puts it where the public API below reads it.
- the W&B public API, for an `entity/project` string that names no local path (needs network and a login).
Config fields become dotted columns (`model.window`, `optim.lr`); results keys keep their names and win over a
config field of the same name, which then stays as `config.<name>`. W&B rows keep W&B's metric names and also get
the results.json names (`val/loss` -> `val_loss`) and a `status` on results.json's scale (completed, failed,
incomplete), so reports filter and compare rows from every source alike.
"""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.cli import InputError

WANDB_PROJECT = re.compile(r"^[\w.-]+/[\w.-]+$")
WANDB_RUN = re.compile(r"^(offline-)?run-\d")
# W&B metric name -> results.json name: what `workbench.training.run` copies from Lightning's logged metrics
RESULT_NAMES = {"train/loss": "train_loss", "val/loss": "val_loss", "val/bpb": "val_bpb",
                "val/accuracy": "val_accuracy"}  # fmt: skip
API_STATUS = {"finished": "completed", "failed": "failed", "crashed": "failed", "killed": "failed"}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"window": 64}} -> {"model.window": 64}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _row(results: Mapping[str, Any], config: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    row = flatten(config)
    for key, value in flatten(results).items():
        if key in row and row[key] != value:
            row[f"config.{key}"] = row[key]
        row[key] = value
    row.update(extra)
    return row


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return _mapping(path, yaml.safe_load(path.read_text()) or {}, "a YAML map of config keys")
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(e).split())}); allowed: a run's config.yaml") from e


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return _mapping(path, json.loads(path.read_text()), what)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); allowed: {what} (delete or rerun a run cut off while "
                         "writing it)") from e  # fmt: skip


def _mapping(path: Path, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"{path}: got a {type(value).__name__}; allowed: {what}")
    return dict(value)


def run_dir_row(run_dir: Path) -> dict[str, Any]:
    config = _read_yaml(run_dir / "config.yaml") or _read_yaml(run_dir / ".hydra" / "config.yaml")
    results_path = run_dir / "results.json"
    results = _read_json(results_path, "a JSON object of a run's results") if results_path.is_file() else {
        "status": "incomplete"}  # fmt: skip
    return _row(results, config, run_dir=str(run_dir), source="run_dir")


def _wandb_row(summary: Mapping[str, Any], config: Mapping[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    """A W&B run's row: its metrics under W&B's names and, where the training code logs them, results.json's."""
    results = {**summary, **{name: summary[key] for key, name in RESULT_NAMES.items() if key in summary}}
    return _row({"status": status, **results}, config, **extra)


def wandb_offline_row(run_dir: Path) -> dict[str, Any]:
    """A W&B run dir: files/config.yaml ({key: {"value": ...}}) + wandb-summary.json (completed once a summary was
    written, else incomplete)."""
    extra = dict(run_dir=str(run_dir), source="wandb_offline", wandb_id=run_dir.name.split("-")[-1])
    files = run_dir / "files"
    raw = _read_yaml(files / "config.yaml")
    config = {k: v["value"] if isinstance(v, Mapping) and "value" in v else v for k, v in raw.items() if k != "_wandb"}
    summary_path = files / "wandb-summary.json"
    summary = _read_json(summary_path, "a W&B summary (a JSON object)") if summary_path.is_file() else {}
    summary = {k: v for k, v in summary.items() if k != "_wandb"}
    return _wandb_row(summary, config, "completed" if summary else "incomplete", **extra)


def _local_rows(roots: Iterable[Path]) -> list[dict[str, Any]]:
    run_dirs: set[Path] = set()
    wandb_dirs: set[Path] = set()
    for root in (r.resolve() if r.is_dir() else r.resolve().parent for r in roots):  # a matched file: its dir
        run_dirs |= {p.parent for name in ("results.json", "metrics.csv") for p in root.rglob(name)}
        for marker in ("files/config.yaml", "files/wandb-summary.json"):
            wandb_dirs |= {p.parent.parent for p in root.rglob(marker) if WANDB_RUN.match(p.parent.parent.name)}
    # a run's own nested logs (W&B, Lightning's CSV logger) are not runs of their own, unless results.json is missing
    finished = {d for d in run_dirs if (d / "results.json").is_file()}
    wandb_dirs = {w for w in wandb_dirs if finished.isdisjoint(w.parents)}
    deferring = {p for w in wandb_dirs for p in w.parents}
    run_dirs = {d for d in run_dirs if run_dirs.isdisjoint(d.parents) and (d in finished or d not in deferring)}
    return [run_dir_row(p) for p in sorted(run_dirs)] + [wandb_offline_row(p) for p in sorted(wandb_dirs)]


def _wandb_api_rows(project: str) -> list[dict[str, Any]]:
    import wandb

    rows = []
    for run in wandb.Api().runs(project):
        summary = {k: v for k, v in run.summary_metrics.items() if k != "_wandb"}
        config = {k: v for k, v in run.config.items() if k != "_wandb"}
        status = API_STATUS.get(run.state, "incomplete")
        rows.append(_wandb_row(summary, config, status, run_dir=run.url, source="wandb_api", wandb_id=run.id,
                               state=run.state))  # fmt: skip
    return rows


def load(path_or_glob: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run found under the given dirs/globs (searched recursively), or in a W&B `entity/project`."""
    patterns = [path_or_glob] if isinstance(path_or_glob, str | Path) else list(path_or_glob)
    roots: list[Path] = []
    rows: list[dict[str, Any]] = []
    for pattern in map(str, patterns):
        matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
        if not matches and WANDB_PROJECT.match(pattern):
            rows += _wandb_api_rows(pattern)
        roots += matches
    return pd.DataFrame(_local_rows(roots) + rows)


def load_metrics(run_dir: str | Path) -> pd.DataFrame:
    """A training run's logged curve, one row per logging call: its `metrics.csv` (written by every run, whatever
    the logger)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.csv; a training run dir (results.json's run_dir) has one")
    return pd.read_csv(path)
