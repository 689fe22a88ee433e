"""`data.passkey_mix`: passkey rows mixed into a text source's training batches, so a language model learns retrieval.

The corpus is the repo's own Python source (byte tokens, so a text row never holds the KEY or QUERY special).
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.workbench.train_helpers import REPO
from workbench.data import build_data
from workbench.data.bundle import IGNORE
from workbench.data.byte_tokenizer import SPECIALS
from workbench.data.passkey import DIGITS, longest_distance
from workbench.long_context import passkey_accuracy
from workbench.model import build_model
from workbench.presets import PRESETS
from workbench.training.errors import ConfigError
from workbench.training.sweep import planned_jobs

SEQ, BATCH, N_DIGITS = 32, 16, 5
KEY, QUERY = SPECIALS["key"], SPECIALS["query"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A text-source data config; `mix` and `seed` vary per test."""
    cache = tmp_path_factory.mktemp("cache")
    return {"source": "text", "path": str(REPO / "workbench"), "glob": "*.py", "seq_len": SEQ, "batch_size": BATCH,
            "val_fraction": 0.1, "val_tokens": 2048, "cache_dir": str(cache), "passkey_digits": N_DIGITS}  # fmt: skip


def _passkey_rows(x: torch.Tensor) -> torch.Tensor:
    return (x == KEY).any(1)


def _distance(row: torch.Tensor) -> int:
    """Filler tokens between the key's last digit and QUERY."""
    return int((row == QUERY).nonzero()) - int((row == KEY).nonzero()) - 1 - N_DIGITS


@pytest.mark.parametrize(("mix", "batch", "counts"), [(0.25, 16, {4}), (0.3, 10, {3}), (0.1, 4, {0, 1})])
def test_each_batch_has_the_mix_fraction_of_passkey_rows(corpus, mix, batch, counts):
    """mix x batch rows, rounded up or down at random when fractional, so the mean fraction is `mix` exactly."""
    data = build_data({**corpus, "batch_size": batch, "passkey_mix": mix}, 0)
    n = [int(_passkey_rows(data.train(i)[0]).sum()) for i in range(300)]
    assert set(n) == counts
    assert np.mean(n) / batch == pytest.approx(mix, abs=0.015)


def test_loss_only_on_the_answer_digits_of_passkey_rows_and_text_rows_untouched(corpus):
    plain, mixed = build_data({**corpus, "passkey_mix": 0.0}, 0), build_data({**corpus, "passkey_mix": 0.5}, 0)
    for i in range(20):
        (tx, ty), (x, y) = plain.train(i), mixed.train(i)
        pk = _passkey_rows(x)
        assert int(pk.sum()) == BATCH // 2 and not _passkey_rows(tx).any()
        assert torch.equal(x[~pk], tx[~pk]) and torch.equal(y[~pk], ty[~pk]) and (y[~pk] != IGNORE).all()
        for row_x, row_y in zip(x[pk], y[pk], strict=True):
            answer = (row_y != IGNORE).nonzero().flatten()
            key, query = int((row_x == KEY).nonzero()), int((row_x == QUERY).nonzero())
            assert answer.tolist() == list(range(query, query + N_DIGITS))  # targets: the digits after QUERY
            assert torch.equal(row_y[answer], row_x[key + 1 : key + 1 + N_DIGITS])  # ... which repeat the key's
            assert ((row_y[answer] >= DIGITS) & (row_y[answer] < DIGITS + 10)).all()


def test_a_batch_depends_only_on_seed_and_step(corpus):
    a, b = build_data({**corpus, "passkey_mix": 0.25}, 0), build_data({**corpus, "passkey_mix": 0.25}, 0)
    other_seed = build_data({**corpus, "passkey_mix": 0.25}, 1)
    for i in (0, 7, 7, 3):  # any order, any repeat: a resumed run replays the same batches
        assert all(torch.equal(u, v) for u, v in zip(a.train(i), b.train(i), strict=True))
    assert not torch.equal(a.train(7)[0], a.train(8)[0]) and not torch.equal(a.train(7)[0], other_seed.train(7)[0])


def test_distances_cover_every_one_that_fits_the_sequence(corpus):
    data = build_data({**corpus, "passkey_mix": 0.25}, 0)
    rows = torch.cat([data.train(i)[0] for i in range(150)])
    seen = {_distance(r) for r in rows[_passkey_rows(rows)]}
    assert seen == set(range(longest_distance(SEQ, N_DIGITS) + 1)) == set(range(SEQ + 1 - 2 * N_DIGITS - 2 + 1))


def test_validation_stays_text_and_the_info_records_the_mix(corpus):
    plain, mixed = build_data({**corpus, "passkey_mix": 0.0}, 0), build_data({**corpus, "passkey_mix": 0.25}, 0)
    assert len(mixed.val) == len(plain.val) > 0
    assert all(torch.equal(u, v) for a, b in zip(plain.val, mixed.val, strict=True) for u, v in zip(a, b, strict=True))
    assert (mixed.info["passkey_mix"], mixed.info["passkey_digits"]) == (0.25, N_DIGITS)
    assert "passkey_mix" not in plain.info


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.passkey_mix=-0.1"], ["data.passkey_mix: got -0.1", "a number in [0, 1)"]),
        pytest.param(["data.passkey_digits=2.5"], ["data.passkey_digits: got 2.5", "integer >= 1"],
                     marks=pytest.mark.slow),
        (["data.passkey_mix=0.25", "data.seq_len=16", "data.passkey_digits=8"],
         ["data.passkey_digits: got 8", "at most (data.seq_len - 1) // 2 = 7"]),
        pytest.param(["data=hf", "data.name=x", "data.tokenizer=x", "data.passkey_mix=0.25"],
                     ["data.passkey_mix: got 0.25", "0 for data.source=hf", "byte tokens"],
                     marks=pytest.mark.slow),  # fast: test_hf_with_a_mix_fails_before_loading_the_dataset
    ],
)  # fmt: skip
def test_bad_values_are_config_errors(overrides, expected, tmp_path):
    with pytest.raises(ConfigError) as e:
        planned_jobs([*overrides, f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path}/r"], False)
    assert all(s in str(e.value) for s in expected), str(e.value)
    assert not (tmp_path / "cache").exists()


def test_hf_with_a_mix_fails_before_loading_the_dataset():
    cfg = {"source": "hf", "name": "no/such-dataset", "tokenizer": "nope", "seq_len": SEQ, "passkey_mix": 0.25}
    with pytest.raises(ValueError, match=r"data\.passkey_mix: got 0\.25; allowed: 0 for data\.source=hf"):
        build_data(cfg, 0)


def _train_passkey_accuracy(data_cfg: dict, steps: int, distance: int) -> float:
    """A 2-layer global-attention model trained directly; init_std=0.1 as in test_train.py's MQAR test."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(PRESETS["tiny"], n_layers=2, d_model=64, mlp_hidden=128, n_heads=2, n_kv_heads=2,
                              init_std=0.1, layer_pattern="global", max_seq_len=SEQ)  # fmt: skip
    model, data = build_model(cfg), build_data(data_cfg, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for i in range(steps):
        x, y = data.train(i)
        loss = F.cross_entropy(model(x).flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return float(passkey_accuracy(model, [distance], SEQ, samples=64, n_digits=N_DIGITS).digit_accuracy.item())


@pytest.mark.slow
def test_a_model_trained_with_the_mix_retrieves_and_one_without_does_not(corpus):
    """Chance is 0.1 per digit. With half the rows passkey rows, 250 steps reach ~0.55 (torch seeds 0-3: 0.53-0.62);
    on text alone the model never sees KEY/QUERY and stays at or below chance."""
    distance = longest_distance(SEQ, N_DIGITS) - 3
    mixed = _train_passkey_accuracy({**corpus, "passkey_mix": 0.5}, 250, distance)
    plain = _train_passkey_accuracy({**corpus, "passkey_mix": 0.0}, 250, distance)
    assert mixed > 0.35 and plain < 0.15, (mixed, plain)
