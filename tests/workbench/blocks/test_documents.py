"""Document masking: in float64, the logits of document B packed after A equal those of B alone (positions restart),
on every attention path (blocked local, masked, causal global, flex) and every attention kind and knob."""

import pytest
import torch
import torch.nn.functional as F

from tests.tiers import slow_unless
from workbench import build_model, get_preset
from workbench.blocks.attention import attention_path
from workbench.blocks.documents import DocumentMasking, Documents

SEP = 256  # the byte tokenizer's EOS, which ends every document
BASE = get_preset("tiny").replace(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden=48, layer_pattern="2:1",
                                  window=4, max_seq_len=64, mla_latent_dim=12, mla_rope_dim=4)  # fmt: skip
TOL = 256 * torch.finfo(torch.float64).eps  # float64 rounding of two computations of O(1) logits


def test_ids_and_positions_split_after_each_separator():
    x = torch.tensor([[5, 6, SEP, 7, SEP, SEP, 8, 9], [SEP, 1, 2, 3, 4, 5, 6, 7]])
    docs = Documents.from_separators(x, SEP)
    assert docs.ids.tolist() == [[0, 0, 0, 1, 1, 2, 3, 3], [0, 1, 1, 1, 1, 1, 1, 1]]
    assert docs.positions.tolist() == [[0, 1, 2, 0, 1, 0, 0, 1], [0, 0, 1, 2, 3, 4, 5, 6]]
    assert Documents.from_separators(x, SEP, "continue").positions is None
    with pytest.raises(ValueError, match=r"data.document_positions: got 'reset'; allowed: restart, continue"):
        Documents.from_separators(x, SEP, "reset")


def packed(len_a: int, len_b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [A | B]: A of len_a tokens ending with the separator, B of len_b tokens without one; and B alone."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randint(0, 256, (2, len_a), generator=gen)
    a[:, -1] = SEP
    b = torch.randint(0, 256, (2, len_b), generator=gen)
    return torch.cat((a, b), dim=1), b


KINDS = [
    {},
    {"attn_logit": "softcap"},
    {"attn_sinks": True, "attn_gate": "elementwise", "qk_norm_scope": "projection", "norm_placement": "reordered"},
    {"attention": "mla"},
    {"k_eq_v_global": True, "v_norm": True, "kv_shared_layers": 2, "n_layers": 4, "layer_pattern": "1:1"},
]


# 16 tokens = 4 windows of 4: the blocked local path; 11: the masked one. The fast tier runs flex's blocked path (a
# second a kind on a CPU) on the plain model only.
@pytest.mark.parametrize(
    ("len_a", "len_b", "path", "kind"),
    [pytest.param(len_a, len_b, path, kind, id=f"{lens}-{path}-{kind}",
                  marks=slow_unless((lens, path) != ("blocked", "flex") or kind == KINDS[0]))
     for (len_a, len_b), lens in (((7, 9), "blocked"), ((5, 6), "masked")) for path in ("auto", "dense", "flex")
     for kind in KINDS],
)  # fmt: skip
@torch.no_grad()
def test_document_b_packed_after_a_equals_b_alone(kind, path, len_a, len_b):
    torch.manual_seed(0)
    model = build_model(BASE.replace(**kind)).double().eval()
    for name, p in model.named_parameters():
        if name.endswith("sinks"):
            p.normal_(0, 1)
    x, b = packed(len_a, len_b)
    with attention_path(path):
        got = model(x, documents=DocumentMasking(SEP)(x))[:, len_a:]
        alone = model(b)
        unmasked = model(x)[:, len_a:]
    assert (got - alone).abs().max() <= TOL * alone.abs().max()
    assert (unmasked - alone).abs().max() > 1e-3  # without the mask, B sees A


@torch.no_grad()
def test_continue_differs_from_restart_only_by_rope_rounding():
    """RoPE scores depend on i - j only and no query sees another document, so shifting a document's positions by
    len(A) changes nothing but the float32 rounding of cos/sin (angles up to T = 11 rad, each off by up to
    eps32 / 2 of its size)."""
    model = build_model(BASE).double().eval()
    x, _ = packed(5, 6)
    cont = model(x, documents=DocumentMasking(SEP, "continue")(x))
    restart = model(x, documents=DocumentMasking(SEP)(x))
    tol = 16 * torch.finfo(torch.float32).eps * x.shape[1] * restart.abs().max()
    assert (cont - restart).abs().max() <= tol
    assert (model(x) - restart).abs().max() > 1e-3  # the mask itself is on


def test_gradients_stay_inside_documents():
    """On the blocked local path too: the loss of B's tokens has no gradient with respect to A's embeddings."""
    model = build_model(BASE).double()
    x, _ = packed(7, 9)
    emb = model.embed(x).detach().requires_grad_(True)
    model.embed.forward = lambda ids: emb  # the inputs' embeddings, as a leaf
    logits = model(x, documents=DocumentMasking(SEP)(x))
    F.cross_entropy(logits[:, 7:].flatten(0, 1), x[:, 7:].flatten()).backward()
    assert emb.grad[:, :7].abs().max() == 0 and emb.grad[:, 7:].abs().max() > 0


def test_documents_with_a_cache_are_refused():
    model = build_model(BASE)
    x, _ = packed(5, 6)
    with pytest.raises(ValueError, match="documents: a document mask is for a forward pass without a KV cache"):
        model(x, model.new_cache(2, 16), documents=DocumentMasking(SEP)(x))


def test_attention_probes_score_only_pairs_inside_documents():
    """The stability monitor's probe counts the pairs each layer attends: A's and B's own causal pairs."""
    from workbench.probes import attach_probes

    model = build_model(BASE.replace(layer_pattern="global"))
    attention, _ = attach_probes(model)
    x, _ = packed(5, 6)
    with torch.no_grad():
        model(x, documents=DocumentMasking(SEP)(x))
    per_row = 5 * 6 // 2 + 6 * 7 // 2
    assert [p.pairs for p in attention] == [2 * BASE.n_heads * per_row] * BASE.n_layers
