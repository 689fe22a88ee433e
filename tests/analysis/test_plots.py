import numpy as np
import pandas as pd
import pytest

from analysis import plots
from analysis.scaling import fit_runs
from workbench import get_preset


def assert_written(paths, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in paths[1].read_bytes()[:2000]


def test_loss_curves(tmp_path):
    curve = pd.DataFrame(
        {"step": [0, 10, 20, 30], "train/loss": [5.0, 4.0, 3.5, 3.2], "val/loss": [np.nan, 4.1, np.nan, 3.4]}
    )
    assert_written(plots.loss_curves({"baseline": curve, "5:1": curve * 0.9}, tmp_path / "curves.png"), "curves")


def test_forest(tmp_path):
    deltas = pd.DataFrame({"label": ["window 32", "qk_norm off", "1:1"], "delta": [0.02, -0.01, 0.0],
                           "lo": [0.01, -0.03, -0.02], "hi": [0.03, 0.01, 0.02]})  # fmt: skip
    assert_written(plots.forest(deltas, tmp_path / "sub" / "forest"), "forest")


def test_kv_bytes_vs_context(tmp_path):
    configs = {"gemma3-27b": get_preset("gemma3-27b"), "gemma2-9b": get_preset("gemma2-9b")}
    assert_written(plots.kv_bytes_vs_context(configs, tmp_path / "kv", contexts=[1024, 8192, 65536]), "kv")


def test_pareto_frontier_and_plot(tmp_path):
    runs = pd.DataFrame({"kv_bytes": [4e9, 1e9, 2e9, 3e9], "val_loss": [2.0, 2.5, 2.2, 2.3], "label": list("abcd")})
    assert list(plots.pareto_frontier(runs.kv_bytes.to_numpy(), runs.val_loss.to_numpy())) == [1, 2, 0]
    assert_written(plots.loss_vs_kv_pareto(runs, tmp_path / "pareto", label="label"), "pareto")
    # an accuracy (higher is better): the frontier is the points no other beats with less memory and a higher value
    acc = runs.assign(auc=[0.9, 0.5, 0.8, 0.7])  # d (3 GB, 0.7) is beaten by c (2 GB, 0.8)
    assert list(plots.pareto_frontier(acc.kv_bytes.to_numpy(), acc.auc.to_numpy(), higher_is_better=True)) == [1, 2, 0]
    assert list(plots.pareto_frontier(acc.kv_bytes.to_numpy(), acc.auc.to_numpy())) == [1]  # lower: b beats all
    assert_written(plots.loss_vs_kv_pareto(acc, tmp_path / "acc", y="auc", higher_is_better=True), "acc")


@pytest.mark.parametrize("n_runs", [36, 3], ids=["fit", "too-few"])
def test_scaling_fit(tmp_path, n_runs):
    c = np.repeat([1e18, 1e19, 1e20, 1e21], 9)
    n = 2e8 * (c / 1e19) ** 0.45 * np.exp(np.tile(np.linspace(-2, 2, 9), 4))
    d = c / (6 * n)
    df = pd.DataFrame({"params.total": n, "tokens_seen": d, "val_loss": 1.7 + 400 / n**0.34 + 410 / d**0.28})[:n_runs]
    fits = fit_runs(df, n_boot=0)
    assert_written(plots.scaling_fit(fits, tmp_path / "scaling"), "scaling")


def test_lr_sensitivity_figure_marks_each_arms_best_rate_and_diverged_rates(tmp_path):
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    table = pd.DataFrame({"arm": ["a"] * 4 + ["b"] * 4, "lr": lrs * 2,
                          "mean": [2.4, 2.2, 2.1, 2.3, 2.5, 2.3, np.nan, 9.0],
                          "ci_lo": [2.3, 2.1, 2.0, 2.2, 2.4, 2.2, np.nan, 8.0],
                          "ci_hi": [2.5, 2.3, 2.2, 2.4, 2.6, 2.4, np.nan, 10.0],
                          "diverged": [False] * 4 + [False, False, True, True]})  # fmt: skip
    fig = plots.lr_sensitivity_figure(table, best={"a": 1e-2, "b": 3e-3})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers: (data line, caps, bars)
    assert list(lines["a"].get_xdata()) == lrs and list(lines["a"].get_ydata()) == [2.4, 2.2, 2.1, 2.3]
    assert list(lines["b"].get_xdata()) == lrs[:2]  # nothing drawn from the edge on: 9.0 would flatten the plot
    points = [tuple(np.round(o, 6)) for c in ax.collections for o in c.get_offsets()]
    assert (1e-2, 2.1) in points and (3e-3, 2.3) in points  # the best rates, ringed
    assert (1e-2, 0.93) in points and (3e-2, 0.93) in points  # b's diverged rates, on b's row along the top
    assert not any(y == 0.97 for _, y in points)  # a diverged nowhere
    assert ax.get_xlim()[0] < 1e-3 and ax.get_xlim()[1] > 3e-2
    assert_written(plots.save(fig, tmp_path / "lr"), "lr")
