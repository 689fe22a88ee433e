import json
import math
import time
import warnings

import pytest
import torch

import workbench.blocks.attention as attention
from analysis import throughput
from workbench.blocks.attention import attention_path
from workbench.model import build_model
from workbench.presets import get_preset


def test_quick_mode_runs_both_models_and_every_cpu_path(capsys):
    throughput.main(["--quick", "--json", "--threads", "1"])
    r = json.loads(capsys.readouterr().out)
    assert {"device", "threads", "load_average", "params", "reference", "paths", "scaling"} <= set(r)
    assert set(r["reference"]) == set(throughput.PHASES)
    for phase in r["reference"].values():
        assert all(math.isfinite(phase[k]) and phase[k] > 0 for k in ("ratio", "cpu_ratio"))
        for model in ("ours", "reference"):
            assert all(phase[model][k] > 0 for k in ("tokens_per_s", "cpu_tokens_per_s", "peak_mb"))
    for path in ("auto", "dense"):
        assert all(r["paths"][path][p]["tokens_per_s"] > 0 for p in ("train", "prefill"))
    assert "unavailable" in r["paths"]["flex"]
    assert [row["context"] for row in r["scaling"]["rows"]] == throughput.QUICK["sweep"]
    assert all(
        row[k] > 0 for row in r["scaling"]["rows"] for k in ("tokens_per_s", "cpu_tokens_per_s", "flops_per_token")
    )


@pytest.mark.parametrize("softcap", [False, True])
@pytest.mark.parametrize("path", ["dense", "flex"])
def test_forced_paths_compute_the_default_logits(monkeypatch, path, softcap):
    """The benchmark compares equal computations: the default here takes the blocked window path."""
    cfg = get_preset("tiny").replace(window=32, attn_logit="softcap+qk_norm" if softcap else "qk_norm")
    model = build_model(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 128))
    blocked, original = [], attention.attend_blocked_local
    monkeypatch.setattr(attention, "attend_blocked_local", lambda *a: blocked.append(1) or original(*a))
    with torch.no_grad():
        default = model(ids)
        assert blocked, "the default path should use the blocked window kernel at T = 4W"
        blocked.clear()
        with warnings.catch_warnings(), attention_path(path):
            warnings.simplefilter("ignore")  # flex's eager-mode notice on CPU
            forced = model(ids)
    assert not blocked
    torch.testing.assert_close(forced, default, atol=1e-5, rtol=1e-5)


def test_attention_path_restores_and_rejects_unknown_names():
    with attention_path("dense"):
        assert attention._path == "dense"
    assert attention._path == "auto"
    with pytest.raises(ValueError, match="allowed: auto, dense, flex"), attention_path("sparse"):
        pass


def test_window_context_and_sections_reach_the_compared_models(monkeypatch, capsys):
    """`--window` sets the compared model's local window (here: blocked path, blocks of 32); `--sections` a subset."""
    windows, original = [], attention.attend_blocked_local
    monkeypatch.setattr(attention, "attend_blocked_local", lambda *a: windows.append(a[3]) or original(*a))
    r = throughput.main(["--quick", "--threads", "1", "--window", "32", "--sections", "reference"])
    assert (r["window"], r["context"], r["batch"]) == (32, 128, 2) and not {"paths", "scaling"} & set(r)
    assert windows and set(windows) == {32}
    assert "ours/ref" in capsys.readouterr().out


def test_benchmark_config_grows_max_seq_len_only():
    tiny = get_preset("tiny")
    cfg = throughput.benchmark_config("tiny", 4 * tiny.max_seq_len, 16)
    assert (cfg.max_seq_len, cfg.window) == (4 * tiny.max_seq_len, 16)
    assert cfg.replace(max_seq_len=tiny.max_seq_len, window=tiny.window) == tiny
    assert throughput.benchmark_config("tiny", None, None) == tiny


@pytest.mark.parametrize("flag", ["--window", "--context", "--batch"])
def test_non_positive_sizes_are_rejected(flag):
    with pytest.raises(ValueError, match=f"{flag[2:]}: got 0"):
        throughput.main([flag, "0", "--sections", "reference"])


def test_closures_are_timed_in_turns_by_wall_and_cpu_time():
    """Turns put a shared machine's changing load on every compared model alike; CPU time leaves waiting out."""
    calls = []

    def setup(name, seconds):
        return lambda: lambda: calls.append(name) or time.sleep(seconds)

    out = throughput.median_seconds({"a": setup("a", 0.0), "b": setup("b", 0.05)}, 1, 2, torch.device("cpu"))
    assert calls == ["a", "b"] * 3
    wall, cpu = out["b"]
    assert wall >= 0.05 and cpu < 0.03 and out["a"][0] < wall
