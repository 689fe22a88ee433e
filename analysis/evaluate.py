"""`python -m analysis.evaluate <run dir> --tasks <task>[,<task>...]`: score a finished run with lm-evaluation-harness.

The run's model is exported to `transformers` with its data source's tokenizer (`workbench.hf_export`, saved to
`<run dir>/hf`) and scored through the harness's Python API (`HFLM` on the in-memory model, `simple_evaluate`).
A task is a path to a task YAML, a task shipped in `analysis/lm_eval_tasks/` (e.g. `python_syntax`, local data, no
hub), or any task name lm-eval registers (e.g. `hellaswag`, which downloads its data from the hub). Prints the
scores as a table and merges them, per task, into `<run dir>/lm_eval.json` beside results.json;
`--log-samples` also writes each request's scores to `<run dir>/lm_eval_samples/<task>.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

from workbench.checkpoints import CorruptCheckpointError

RESULTS_FILE, SCORES_FILE, EXPORT_DIR, SAMPLES_DIR = "results.json", "lm_eval.json", "hf", "lm_eval_samples"
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
YAML_SUFFIXES = (".yaml", ".yml")


def check_run(run_dir: str | Path) -> Path:
    """The run dir, if it exists and its results.json says it completed; else FileNotFoundError / ValueError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir: {run_dir} does not exist")
    results = run_dir / RESULTS_FILE
    if not results.is_file():
        raise FileNotFoundError(f"{results} does not exist: the run did not complete (or this is not a run dir)")
    try:
        status = json.loads(results.read_text()).get("status")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{results} is not a run's results ({e})") from e
    if status != "completed":
        raise ValueError(f"{results}: status {status!r}; allowed: 'completed' (only a finished run has final weights)")
    return run_dir


def shipped_tasks() -> list[str]:
    return sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))


def task_specs(tasks: str) -> list[str]:
    """`--tasks` split on commas; a YAML path must exist (a name is checked against the index in `load_tasks`)."""
    specs = [t.strip() for t in tasks.split(",") if t.strip()]
    if not specs:
        raise ValueError("--tasks: got an empty list; allowed: task names or task YAML paths, comma-separated")
    for spec in specs:
        if spec.endswith(YAML_SUFFIXES) and not Path(spec).is_file():
            raise FileNotFoundError(f"--tasks: {spec} does not exist")
    return specs


def load_tasks(specs: Sequence[str]) -> Any:
    """An lm-eval `TaskManager` that resolves every spec, each checked by building it once. lm-eval's own index
    (~15 k tasks, seconds to build) is read only when a spec is neither a YAML nor a shipped task."""
    from lm_eval.tasks import TaskManager

    shipped = shipped_tasks()
    named = [s for s in specs if not s.endswith(YAML_SUFFIXES) and s not in shipped]
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=bool(named))
    known = {*manager.all_tasks, *manager.all_groups, *manager.all_tags}
    for spec in specs:
        if spec.endswith(YAML_SUFFIXES):
            try:
                manager.load(spec)
            except Exception as e:  # a YAML error, a missing key or function, unreadable data: all the file's
                raise ValueError(f"--tasks: {spec} is not a readable lm-eval task ({type(e).__name__}: {e})") from e
        elif spec not in known:
            raise ValueError(
                f"--tasks: got {spec!r}; allowed: a task YAML path, a shipped task ({', '.join(shipped)}) or a task "
                "lm-eval registers (`lm-eval ls tasks`)"
            )
    return manager


def evaluate(
    run_dir: str | Path,
    tasks: str,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    device: str | None = None,
    log_samples: bool = False,
) -> dict[str, Any]:
    """Score the run on `tasks` (comma-separated); write lm_eval.json (and the samples); return the harness's output."""
    run_dir = check_run(run_dir)  # the cheap checks before lm-eval's imports (seconds)
    specs = task_specs(tasks)
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from workbench.hf_export import export_run

    manager = load_tasks(specs)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = export_run(run_dir, run_dir / EXPORT_DIR)
    lm = HFLM(pretrained=model.to(device), tokenizer=tokenizer, batch_size=batch_size, device=device)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(specs), limit=limit, task_manager=manager, log_samples=True)
    write_scores(run_dir, out, limit=limit, batch_size=batch_size, device=device)
    if log_samples:
        write_samples(run_dir / SAMPLES_DIR, out["samples"])
    return out


def scores(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task: its metrics (`acc,none` -> value, as lm-eval names them), version, and docs scored of the total."""
    tasks = {}
    for task, values in out["results"].items():
        metrics = {k: v for k, v in values.items() if "," in k}
        n = out["n-samples"].get(task, {})
        tasks[task] = {"metrics": metrics, "version": out["versions"].get(task),
                       "n_samples": n.get("effective"), "n_docs": n.get("original")}  # fmt: skip
    return tasks


def write_scores(run_dir: Path, out: dict[str, Any], **settings: Any) -> Path:
    """Merge this evaluation's tasks into lm_eval.json (a task scored again replaces its entry)."""
    path = run_dir / SCORES_FILE
    previous = json.loads(path.read_text()).get("tasks", {}) if path.is_file() else {}
    new = {
        task: {**entry, **settings, "lm_eval_version": out["lm_eval_version"]} for task, entry in scores(out).items()
    }
    path.write_text(json.dumps({"tasks": {**previous, **new}}, indent=2, default=str) + "\n")
    return path


def write_samples(folder: Path, samples: dict[str, list[dict[str, Any]]]) -> None:
    folder.mkdir(exist_ok=True)
    for task, rows in samples.items():
        (folder / f"{task}.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))


def table(out: dict[str, Any]) -> str:
    rows = []
    for task, entry in scores(out).items():
        for key, value in entry["metrics"].items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            stderr = entry["metrics"].get(f"{metric}_stderr,{filt}")
            rows.append([task, metric, filt, value, stderr, entry["n_samples"]])
    return tabulate(rows, headers=["task", "metric", "filter", "value", "stderr", "n"], floatfmt=".4f")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", required=True, help="task names or task YAML paths, comma-separated")
    parser.add_argument("--limit", type=int, help="score only the first N documents of each task")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--log-samples", action="store_true", help=f"write <run dir>/{SAMPLES_DIR}/<task>.jsonl")
    args = parser.parse_args(argv)
    try:
        for flag, value in (("--limit", args.limit), ("--batch-size", args.batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{flag}: got {value}; allowed: an integer >= 1")
        out = evaluate(args.run_dir, args.tasks, limit=args.limit, batch_size=args.batch_size, device=args.device,
                       log_samples=args.log_samples)  # fmt: skip
    except (ValueError, FileNotFoundError, CorruptCheckpointError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the library's message
        sys.exit(2)
    print(table(out))
    print(f"scores: {Path(args.run_dir) / SCORES_FILE}")


if __name__ == "__main__":
    main()
