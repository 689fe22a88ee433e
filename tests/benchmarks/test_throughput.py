import json
import time
import warnings

import pytest
import torch

import workbench.blocks.attention as attention
from benchmarks import throughput
from workbench.accounting import forward_flops, kv_cache_bytes
from workbench.blocks.attention import attention_path
from workbench.model import build_model
from workbench.presets import get_preset


@pytest.mark.slow
def test_quick_mode_runs_both_models_and_every_cpu_path(capsys):
    throughput.main(["--quick", "--json", "--threads", "1"])
    r = json.loads(capsys.readouterr().out)
    assert {"device", "threads", "load_average", "params", "reference", "paths", "scaling"} <= set(r)
    cfg = throughput.benchmark_config("tiny", throughput.QUICK["context"], None)
    assert r["params"] == sum(p.numel() for p in build_model(cfg).parameters())
    assert set(r["reference"]) == set(throughput.PHASES)
    for phase in r["reference"].values():
        ours, ref = phase["ours"], phase["reference"]
        assert phase["ratio"] == pytest.approx(ours["tokens_per_s"] / ref["tokens_per_s"])
        assert phase["cpu_ratio"] == pytest.approx(ours["cpu_tokens_per_s"] / ref["cpu_tokens_per_s"])
    # peak memory counts what each call allocates: fresh gradients in a train step (set to None after each),
    # the logits and the KV cache a prefill fills
    batch, context, new = (throughput.QUICK[k] for k in ("batch", "context", "new_tokens"))
    grads_mb = r["params"] * 4 / 2**20
    prefill_mb = (batch * context * cfg.vocab_size * 4 + kv_cache_bytes(cfg, context + new, batch, "float32")) / 2**20
    for model in ("ours", "reference"):
        assert r["reference"]["train"][model]["peak_mb"] >= grads_mb
    assert r["reference"]["prefill"]["ours"]["peak_mb"] >= prefill_mb
    for path in ("auto", "dense"):
        assert r["paths"][path]["train"]["peak_mb"] >= grads_mb
        assert r["paths"][path]["prefill"]["peak_mb"] >= prefill_mb
    assert "unavailable" in r["paths"]["flex"]
    # decode: the KV bytes one token reads at the mean timed context (counted by hand from the cache layout: a
    # local layer reads at most its window, a global one every cached token), and the rate they are read at
    decode = r["reference"]["decode"]["ours"]
    mid = context + new // 2
    per_layer = 2 * cfg.n_kv_heads * cfg.resolved_head_dim * 4  # K and V, float32
    by_hand = sum(per_layer * (min(cfg.window, mid + 1) if t == "local" else mid + 1) for t in cfg.layer_types)
    assert decode["kv_bytes_read_per_token"] == by_hand
    assert decode["kv_gb_per_s"] == pytest.approx(by_hand * decode["tokens_per_s"] / 1e9)
    rows = r["scaling"]["rows"]
    per_ctx = [row["context"] for row in rows]
    assert per_ctx == throughput.QUICK["sweep"]
    sweep_cfg = cfg.replace(layer_pattern="5:1", window=throughput.QUICK["sweep_window"], max_seq_len=max(per_ctx))
    for row in rows:
        assert row["flops_per_token"] == forward_flops(sweep_cfg, row["context"]) / row["context"]
    per_token = [row["flops_per_token"] for row in rows]
    assert per_token == sorted(set(per_token)), "the global layer's attention grows with the context"


def test_peak_bytes_counts_the_tensors_a_call_allocates():
    mib = 2**20
    assert mib <= throughput.peak_bytes(lambda: lambda: torch.ones(mib // 4), torch.device("cpu")) < 1.05 * mib
    two = throughput.peak_bytes(lambda: lambda: (torch.ones(mib // 4), torch.ones(mib // 4)), torch.device("cpu"))
    assert 2 * mib <= two < 2.1 * mib


def test_train_phase_is_an_optimiser_step():
    """The timed train closure updates the weights and leaves no gradients behind (the next step allocates them)."""
    cfg = get_preset("tiny")
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, 32))
    before = [p.detach().clone() for p in model.parameters()]
    throughput._phase_setups(throughput._ours(model), ids, 1)["train"]()()
    assert all(p.grad is None for p in model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("softcap", [False, True])
@pytest.mark.parametrize("path", ["dense", "flex"])
@pytest.mark.slow
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


@pytest.mark.slow
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
