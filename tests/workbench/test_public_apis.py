"""No private attributes of Lightning, Hydra, torch, transformers or W&B, and no hand-written twins of libraries the
project depends on: each name below was once used here and has a public replacement (named beside it)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for folder in ("workbench", "analysis", "benchmarks", "tests", "notebooks")
                 for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".ipynb", ".yaml"))  # fmt: skip
# name -> what to use instead
BANNED = {
    r"\._device_mesh\b": "LightningModule.device_mesh",
    r"\._throughputs\b": "lightning.fabric.utilities.throughput.Throughput (workbench.training.run.TokenThroughput)",
    r"\._time\b": "Throughput.compute() / one's own clock",
    r"\._logger_connector\b": "trainer.loggers[i].log_metrics",
    r"\bmetrics_keys\b": "CSVLogger.log_metrics",
    r"\._step_supports_amp_scaling\b": "LightningModule.configure_gradient_clipping",
    r"\b_PRECISION_INPUT": "the values Lightning's Trainer lists when it refuses a precision",
    r"\._json_dict\b": "wandb's Run.summary_metrics",
    r"\._attn_implementation\b": "attn_implementation= or set_attn_implementation()",
    r"\bwandb_log\b": "metrics.csv (analysis.runs.load_metrics)",
    r"\bprint_table\b": "tabulate",
    r"\bevaluate_quantized\b": "workbench.evaluate.mean_loss",
}


def test_the_scan_sees_the_source_tree():
    assert any(p.name == "run.py" for p in SOURCES) and len(SOURCES) > 100


@pytest.mark.parametrize("pattern", BANNED, ids=BANNED.values())
def test_no_private_attribute_or_twin(pattern):
    me = Path(__file__).resolve()
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in SOURCES if p != me
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
            if re.search(pattern, line)]  # fmt: skip
    assert not hits, f"{pattern} (use {BANNED[pattern]}): {hits}"
