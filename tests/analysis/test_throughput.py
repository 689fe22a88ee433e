import json
import math
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
        assert math.isfinite(phase["ratio"]) and phase["ratio"] > 0
        for model in ("ours", "reference"):
            assert phase[model]["tokens_per_s"] > 0 and phase[model]["peak_mb"] > 0
    for path in ("auto", "dense"):
        assert all(r["paths"][path][p]["tokens_per_s"] > 0 for p in ("train", "prefill"))
    assert "unavailable" in r["paths"]["flex"]
    assert [row["context"] for row in r["scaling"]["rows"]] == throughput.QUICK["sweep"]
    assert all(row["tokens_per_s"] > 0 and row["flops_per_token"] > 0 for row in r["scaling"]["rows"])


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
