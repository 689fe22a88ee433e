"""Attention and output-logit probes: values against dense masked score matrices, saturation on constructed logits,
and probes that leave the forward and backward unchanged."""

import math

import pytest
import torch
import torch.nn.functional as F

from workbench import build_model, get_preset, probes
from workbench.probes import AttentionProbe, attach_probes, detach_probes, probe_metrics, saturation_threshold


def _dense_reference(attn, x, window):
    """Logits of every visible pair from an explicit (T, T) mask built pair by pair, and the count of those pairs."""
    B, T, _ = x.shape
    qkv = attn.qkv_proj(x).view(B, T, -1, attn.head_dim).transpose(1, 2)
    q, k, _ = qkv.split((attn.n_heads, attn.n_kv_heads, attn.n_kv_heads), dim=1)
    if hasattr(attn, "q_norm"):
        q, k = attn.q_norm(q), attn.k_norm(k)
    positions = torch.arange(T)
    q, k = attn.rope(q, k, positions)
    k = k.repeat_interleave(attn.n_heads // attn.n_kv_heads, dim=1)
    scores = (q @ k.transpose(-2, -1)) * attn.scale
    mask = torch.tensor([[j <= i and (window is None or j > i - window) for j in range(T)] for i in range(T)])
    return scores.abs()[..., mask], int(mask.sum()) * B * attn.n_heads


@pytest.mark.parametrize("attn_logit", ["none", "softcap", "qk_norm", "softcap+qk_norm"])
def test_probe_max_logit_and_saturation_equal_a_dense_masked_score_matrix(attn_logit, monkeypatch):
    monkeypatch.setattr(probes, "CHUNK_ELEMENTS", 500)  # several query chunks per layer
    cfg = get_preset("tiny").replace(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, head_dim=16, mlp_hidden=128,
                                     layer_pattern="1:1", window=8, attn_logit=attn_logit, attn_softcap=2.0,
                                     final_softcap=1.0, init_std=0.3)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.randint(0, cfg.vocab_size, (2, 32))  # 32 = 4 windows: the blocked sliding-window path
    inputs, pre_cap = {}, {}
    for i, block in enumerate(model.blocks):
        block.attn.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
    model.final_norm.register_forward_hook(
        lambda m, args, out: pre_cap.__setitem__("logits", out @ model.embed.weight.T)
    )
    attention, logits = attach_probes(model)
    with torch.no_grad():
        model(x)
    metrics = probe_metrics(attention, logits)
    assert [b.attn.window for b in model.blocks] == [8, None]
    for i, block in enumerate(model.blocks):
        ref, pairs = _dense_reference(block.attn, inputs[i], block.attn.window)
        cap = 2.0 if "softcap" in attn_logit else probes.REFERENCE_CAP
        assert metrics[f"stability/max_logit/layer{i}"] == pytest.approx(ref.max().item(), rel=1e-5)
        saturated = (ref >= cap * math.atanh(0.9)).sum().item() / pairs
        assert metrics[f"stability/saturation/layer{i}"] == pytest.approx(saturated)
    if attn_logit == "softcap":  # measured before the cap: above it, and saturating some pairs
        assert metrics["stability/max_logit/layer0"] > 2.0 and metrics["stability/saturation/layer0"] > 0
    rms = pre_cap["logits"].pow(2).mean().sqrt().item()
    assert rms > 1.0 and metrics["stability/output_logit_rms"] == pytest.approx(rms, rel=1e-5)  # before the final cap


def test_probe_on_latent_attention_sees_the_queries_and_keys_attention_uses(monkeypatch):
    from workbench.blocks import mla

    seen = []

    def recording(q, k, v, q_pos, k_pos, window, scale, softcap, dropout):
        mask = torch.tensor([[j <= i and (window is None or j > i - window) for j in k_pos] for i in q_pos])
        seen.append(((q @ k.transpose(-2, -1)) * scale).abs()[..., mask].max().item())
        return original(q, k, v, q_pos, k_pos, window, scale, softcap, dropout)

    original = mla.self_attention
    monkeypatch.setattr(mla, "self_attention", recording)
    cfg = get_preset("tiny").replace(n_layers=2, d_model=64, mlp_hidden=128, layer_pattern="1:1", window=8,
                                     attention="mla", mla_latent_dim=32, mla_rope_dim=8)  # fmt: skip
    model = build_model(cfg)
    attention, logits = attach_probes(model)
    with torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (2, 32)))
    metrics = probe_metrics(attention, logits)
    assert [metrics[f"stability/max_logit/layer{i}"] for i in (0, 1)] == pytest.approx(seen, rel=1e-5)


def test_saturation_fraction_on_constructed_logits():
    # one head, head_dim 1, keys all 1, scale 1: query i's logits are q_i on every visible key
    q = torch.tensor([10.0, -80.0, 60.0, 100.0]).view(1, 1, 4, 1)
    k = torch.ones(1, 1, 4, 1)
    pos = torch.arange(4)
    cases = [  # cap, window -> saturated pairs / visible pairs
        (50.0, None, 6 / 10),  # threshold 73.6: rows 1 (2 pairs) and 3 (4 pairs) of 1+2+3+4
        (None, None, 6 / 10),  # no cap: Gemma 2's 50 as the reference
        (50.0, 2, 4 / 7),  # window 2: 1+2+2+2 visible pairs, rows 1 and 3 have 2 each
        (30.0, None, 9 / 10),  # threshold 44.2: rows 1, 2, 3
    ]
    for cap, window, fraction in cases:
        probe = AttentionProbe(cap)
        probe(q, k, pos, pos, window, 1.0)
        assert float(probe.saturated) / probe.pairs == pytest.approx(fraction) and float(probe.max_logit) == 100.0
    grouped = AttentionProbe(50.0)  # 2 query heads share the key head; the second sees only small logits
    grouped(torch.cat((q, q / 10), dim=1), k, pos, pos, None, 1.0)
    assert float(grouped.saturated) / grouped.pairs == pytest.approx(6 / 20)
    threshold = saturation_threshold(50.0)
    assert 50 * math.tanh(threshold / 50) == pytest.approx(45.0) and 1 - math.tanh(threshold / 50) ** 2 < 0.2


def test_attached_probes_leave_the_forward_and_backward_unchanged():
    cfg = get_preset("tiny").replace(n_layers=2, d_model=64, mlp_hidden=128, window=8, attn_logit="softcap")
    model = build_model(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 32))
    grads = []
    for probed in (False, True):
        if probed:
            attach_probes(model)
        model.zero_grad()
        logits = model(x)
        F.cross_entropy(logits.flatten(0, 1), x.flatten()).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    detach_probes(model)
    assert torch.equal(grads[0][0], grads[1][0]) and all(map(torch.equal, grads[0][1], grads[1][1]))
    assert all(b.attn.probe is None for b in model.blocks) and model.logit_probe is None
