"""Golden losses: a tiny fixed run whose numbers must match tests/assets/golden_loss_tiny.json to 1e-4 relative.

One thread, fp32, CPU, seed 0: a 2-layer d_model-32 model (`build_model`), the project's AdamW and schedule
(`build_optimizer`), gradient clipping at the trainer's default, 8 steps on `build_data` batches of a text corpus the
test writes from a fixed seed (numpy's PCG64 stream is the same on every platform; the stdlib corpus differs between
Python patch versions). 1e-4, not bit equality: CPUs of another instruction set sum matmuls in another order.
The train losses at steps 1..8 and the final val and selection losses (`mean_loss`) are compared, so a change that
moves training numerics (model, init, optimiser, schedule, data splits or batches, held-out windows) shows in CI.

Regenerate, as a decision (see `STALE`), with:  .venv/bin/python -m tests.workbench.test_golden_loss --update
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.data import build_data
from workbench.data.bundle import IGNORE
from workbench.evaluate import mean_loss
from workbench.model import build_model
from workbench.optim import build_optimizer
from workbench.presets import PRESETS

GOLDEN = Path(__file__).parents[1] / "assets" / "golden_loss_tiny.json"
REGENERATE = ".venv/bin/python -m tests.workbench.test_golden_loss --update"
STALE = (
    "every committed study trained before it no longer reproduces: the notebooks with training outputs "
    "(local_global_ratio, norm_placement, softcap_vs_qknorm, teacher_gap, window_size) must be rerun or marked stale"
)
STEPS = 8
MODEL = dict(n_layers=2, d_model=32, n_heads=2, n_kv_heads=1, mlp_hidden=64, window=32, max_seq_len=64)
DATA = dict(source="text", glob="*.txt", seq_len=64, batch_size=8, val_fraction=0.1, val_tokens=1024)
WORDS = [
    "the",
    "model",
    "attends",
    "to",
    "every",
    "key",
    "in",
    "its",
    "window",
    "and",
    "the",
    "cache",
    "keeps",
    "what",
    "the",
    "global",
    "layers",
    "need",
]


def write_corpus(folder: Path, files: int = 40, words: int = 400) -> Path:
    """Files of words drawn from a fixed seed: the same bytes on every machine."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"{i:02d}.txt").write_text(" ".join(rng.choice(WORDS, words)) + "\n")
    return folder


OPTIM = dict(lr=3e-3, betas=[0.9, 0.95], eps=1e-8, weight_decay=0.1, schedule="cosine", warmup_steps=2,
             total_steps=STEPS, min_lr_ratio=0.1, decay_fraction=0.2)  # fmt: skip
CLIP = 1.0  # trainer.gradient_clip_val's default
CONFIG = {"model": MODEL, "data": DATA, "optim": OPTIM, "clip": CLIP, "steps": STEPS, "seed": 0, "threads": 1}


def run_tiny(cache_dir: Path) -> dict[str, Any]:
    """The fixed run, its numbers and what they depend on outside this repo (the corpus, the versions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(dataclasses.replace(PRESETS["tiny"], **MODEL))
        corpus = write_corpus(cache_dir / "corpus")
        data = build_data({**DATA, "path": str(corpus), "cache_dir": str(cache_dir / "tokens")}, seed=0)
        built = build_optimizer(model, OPTIM)
        opt, schedule = built["optimizer"], built["lr_scheduler"]["scheduler"]
        losses = []
        for i in range(STEPS):
            x, y = data.train(i)
            loss = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            schedule.step()
            losses.append(loss.item())
        return {"config": CONFIG, "content_hash": data.info["content_hash"], "python": platform.python_version(),
                "torch": torch.__version__, "train_loss": losses, "val_loss": mean_loss(model, data.val)["loss"],
                "selection_loss": mean_loss(model, data.selection)["loss"]}  # fmt: skip
    finally:
        torch.set_num_threads(threads)


def test_tiny_run_matches_the_golden_losses(tmp_path):
    golden, got = json.loads(GOLDEN.read_text()), run_tiny(tmp_path)
    how = f"Regenerate with `{REGENERATE}` only if that is intended: a decision, since {STALE}."
    assert got["config"] == golden["config"], f"the test's fixed config changed. {how}"
    assert got["content_hash"] == golden["content_hash"], (
        f"the written corpus differs from the golden file's (numpy {np.__version__}): the test's data changed. {how}"
    )
    for key in ("train_loss", "val_loss", "selection_loss"):
        assert got[key] == pytest.approx(golden[key], rel=1e-4), (
            f"{key} moved from {GOLDEN.name} (golden {golden[key]}, now {got[key]}; golden made with torch "
            f"{golden['torch']}, this is {got['torch']}): training numerics changed. {how}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--update", action="store_true", help=f"rewrite {GOLDEN}")
    if parser.parse_args().update:
        with tempfile.TemporaryDirectory() as cache:
            GOLDEN.parent.mkdir(parents=True, exist_ok=True)
            GOLDEN.write_text(json.dumps(run_tiny(Path(cache)), indent=1) + "\n")
        print(f"wrote {GOLDEN}; commit it with a message saying why the numbers moved")
    else:
        parser.print_help()
