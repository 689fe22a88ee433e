"""workbench.long_context: loss by position bucket against a direct computation, passkey accuracy on stub models."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.long_context import from_runs
from workbench import build_model, get_preset
from workbench.data.bundle import IGNORE
from workbench.data.byte_tokenizer import SPECIALS, VOCAB_SIZE
from workbench.long_context import evaluate, passkey_accuracy, position_bucket_loss
from workbench.training.errors import ConfigError
from workbench.training.sweep import planned_jobs

TINY = get_preset("tiny").replace(n_layers=2, d_model=64, mlp_hidden=128, layer_pattern="1:1", window=8)


def test_position_bucket_loss_equals_a_direct_computation():
    model = build_model(TINY).eval()
    batches = []
    for _ in range(2):
        x, y = torch.randint(0, 256, (3, 30)), torch.randint(0, 256, (3, 30))
        y[torch.rand(3, 30) < 0.2] = IGNORE  # ignored targets count in neither sum nor denominator
        batches.append((x, y))
    table = position_bucket_loss(model, batches, 4)
    assert table[["start", "end"]].values.tolist() == [[0, 8], [8, 15], [15, 22], [22, 30]]
    with torch.no_grad():
        for row in table.itertuples():
            part = slice(row.start, row.end)
            losses = [F.cross_entropy(model(x)[:, part].flatten(0, 1), y[:, part].flatten(), ignore_index=IGNORE,
                                      reduction="sum") for x, y in batches]  # fmt: skip
            tokens = sum(int((y[:, part] != IGNORE).sum()) for _, y in batches)
            assert row.tokens == tokens
            assert row.loss == pytest.approx(float(sum(losses)) / tokens, rel=1e-5)


class CopyModel(nn.Module):
    """At QUERY, copies the digits after KEY if they are at most `reach` tokens back, else says the next digit."""

    def __init__(self, reach: int = 10**9, right_digits: int = 5) -> None:
        super().__init__()
        self.cfg = SimpleNamespace(vocab_size=VOCAB_SIZE)
        self.reach, self.right_digits, self.calls = reach, right_digits, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logits = torch.zeros(*x.shape, VOCAB_SIZE)
        for b, row in enumerate(x.tolist()):
            key, query = row.index(SPECIALS["key"]), row.index(SPECIALS["query"])
            for i in range(5):  # position query + i predicts digit i, at key + 1 + i
                digit = row[key + 1 + i] - ord("0")
                right = query - key - 1 <= self.reach and i < self.right_digits
                logits[b, query + i, ord("0") + (digit if right else (digit + 1) % 10)] = 1
        return logits


def test_a_perfect_retriever_scores_one_and_a_wrong_one_zero():
    perfect = passkey_accuracy(CopyModel(), [0, 20, 50], context=64, samples=10, batch_size=4)
    assert perfect["digit_accuracy"].tolist() == [1.0] * 3 and perfect["exact_match"].tolist() == [1.0] * 3
    wrong = passkey_accuracy(CopyModel(reach=-1), [0, 20, 50], context=64, samples=10, batch_size=4)
    assert wrong["digit_accuracy"].tolist() == [0.0] * 3 and wrong["exact_match"].tolist() == [0.0] * 3
    assert wrong["samples"].tolist() == [10] * 3
    partial = passkey_accuracy(CopyModel(right_digits=3), [20], context=64, samples=10)
    assert partial["digit_accuracy"].tolist() == [0.6] and partial["exact_match"].tolist() == [0.0]


def test_accuracy_falls_where_the_key_is_out_of_reach():
    # query digit i is read distance + 5 tokens after key digit i: in reach 30 up to distance 25
    table = passkey_accuracy(CopyModel(reach=30), [10, 25, 26, 40], context=64, samples=8)
    assert table["digit_accuracy"].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_same_sequences_for_every_model_and_list_of_distances():
    first = passkey_accuracy(CopyModel(reach=30), [24, 26], context=64, samples=8)
    second = passkey_accuracy(CopyModel(reach=30), [26], context=64, samples=8)
    assert first.iloc[1].to_dict() == second.iloc[0].to_dict()


def test_bad_inputs_are_rejected_before_any_forward_pass():
    model = CopyModel()
    with pytest.raises(ValueError, match=r"distances: got \[54\]; allowed: 0..53 for context 64, 5 digits"):
        passkey_accuracy(model, [10, 54], context=64)
    batch = (torch.zeros(2, 16, dtype=torch.long), torch.zeros(2, 16, dtype=torch.long))
    for buckets in (0, 17):
        with pytest.raises(ValueError, match=rf"^buckets: got {buckets}; allowed: an integer from 1 to the context"):
            position_bucket_loss(model, [batch], buckets)
    with pytest.raises(ValueError, match=r"model.vocab_size: got 100"):
        passkey_accuracy(SimpleNamespace(cfg=SimpleNamespace(vocab_size=100)), [10], context=64)
    assert model.calls == 0


def test_evaluate_records_and_from_runs_expands_them():
    model = build_model(TINY)
    batches = [(torch.randint(0, 256, (2, 32)), torch.randint(0, 256, (2, 32)))]
    out = evaluate(model, batches, 4, [5, 10], samples=4)
    assert model.training  # restored after the evaluation
    assert out["context"] == 32 and len(out["position_buckets"]) == 4 and len(out["passkey"]) == 2
    runs = pd.DataFrame({"ablation.arm": ["a", "b"], "seed": [0, 1],
                         "long_context.passkey": [out["passkey"], np.nan]})  # fmt: skip
    table = from_runs(runs, "passkey")
    assert table["ablation.arm"].tolist() == ["a", "a"] and table["distance"].tolist() == [5, 10]


def test_a_runs_long_context_settings_are_checked_against_its_context(tmp_path):
    def check(*overrides: str) -> None:
        planned_jobs(["data.seq_len=64", f"data.cache_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
                      *overrides], multirun=False)  # fmt: skip

    ok = ["long_context.buckets=8", "long_context.passkey_distances=[10,53]", "long_context.passkey_samples=4"]
    check(*ok)
    check("long_context.buckets=0", "long_context.passkey_distances=[1000]")  # 0: no evaluation at all
    with pytest.raises(ConfigError, match=r"^long_context.passkey_distances: got \[54\]; allowed: 0..53"):
        check(*ok, "long_context.passkey_distances=[54]")
    with pytest.raises(ConfigError, match=r"^long_context.buckets: got 65; allowed: an integer from 1 to the context"):
        check(*ok, "long_context.buckets=65")
    with pytest.raises(ConfigError, match=r"^long_context.passkey_samples: got 0"):
        check(*ok, "long_context.passkey_samples=0")


class _NearOracle(nn.Module):
    """Answers a retrieval row right when its pair lies fewer than `reach` tokens back, else says QUERY (never a
    value): the accuracy by distance it must get is known exactly."""

    def __init__(self, reach: int, vocab: int) -> None:
        super().__init__()
        self.reach, self.vocab = reach, vocab

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*x.shape, self.vocab)
        for b, row in enumerate(x.tolist()):
            earlier = row.index(row[-1])
            answer = row[earlier + 1] if len(row) - 1 - earlier < self.reach else self.vocab - 1
            logits[b, -1, answer] = 1.0
        return logits


def test_accuracy_by_distance_counts_each_row_in_its_bucket():
    from workbench.data import build_data
    from workbench.long_context import accuracy_by_distance

    cfg = {"source": "retrieval", "batch_size": 8, "seq_len": 64, "num_pairs": 4, "num_keys": 16, "num_values": 16,
           "num_distractors": 8, "distance_edges": [3, 8, 12, 32, 64], "val_batches": 3}  # fmt: skip
    bundle = build_data(cfg, 0)
    model = _NearOracle(12, bundle.vocab_size)
    out = accuracy_by_distance(model, bundle.val, [3, 8, 12, 32, 64, 100])
    assert out["accuracy_by_distance"] == {"3-7": 1.0, "8-11": 1.0, "12-31": 0.0, "32-63": 0.0, "64-99": None}
    assert out["counts"] == {"3-7": 6, "8-11": 6, "12-31": 6, "32-63": 6, "64-99": 0}  # 24 rows, taken in turn
    part = accuracy_by_distance(model, bundle.val, [5, 10, 20])  # rows outside the edges are left out
    distances = [len(r) - 1 - r.index(r[-1]) for x, _ in bundle.val for r in x.tolist()]
    assert part["counts"] == {"5-9": sum(5 <= d < 10 for d in distances), "10-19": sum(10 <= d < 20 for d in distances)}
    assert part["accuracy_by_distance"]["5-9"] == 1.0
    hits = sum(10 <= d < 12 for d in distances)
    assert part["accuracy_by_distance"]["10-19"] == pytest.approx(hits / part["counts"]["10-19"])
