"""data=retrieval: the generator's rows against an independent reading of them (distances, answers, keys), its
settings' errors through the CLI, the accounting and dry run, and (slow) the task separating a model whose stacked
windows cannot reach a pair from one with a global layer."""

import csv

import numpy as np
import pytest
import torch

from tests.tiers import tiered
from tests.workbench.train_helpers import assert_user_error, cli_error, compose_cfg
from workbench.accounting import training_flops
from workbench.config import ModelConfig
from workbench.data import build_data
from workbench.data.bundle import IGNORE
from workbench.data.retrieval import bucket_labels, default_edges, query_distances
from workbench.long_context import accuracy_by_distance
from workbench.training.dry_run import dry_run, job_cost
from workbench.training.sweep import planned_jobs

K, V, D = 16, 16, 8  # key, value and distractor ids: keys [0, 16), values [16, 32), distractors [32, 40), QUERY 40
CFG = {"source": "retrieval", "batch_size": 12, "seq_len": 64, "num_pairs": 5, "num_keys": K, "num_values": V,
       "num_distractors": D, "distance_edges": [3, 8, 12, 32, 64], "val_batches": 3}  # fmt: skip
QUERY = K + V + D


def _read(x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """Each row read token by token: where its query key sat before, and what the row says the answer is."""
    rows = []
    for xr, yr in zip(x.tolist(), y.tolist(), strict=True):
        query_key = xr[-1]
        earlier = [i for i, t in enumerate(xr[:-1]) if t == query_key]
        keys = [t for t in xr[:-1] if t < K]
        after_keys = [xr[i + 1] for i, t in enumerate(xr[:-2]) if t < K]
        rows.append({"distance": len(xr) - 1 - earlier[0], "earlier": earlier, "keys": keys,
                     "value_after_key": xr[earlier[0] + 1], "target": yr[-1], "scored": sum(t != IGNORE for t in yr),
                     "marker": xr[-2], "query_key": query_key, "after_keys": after_keys})  # fmt: skip
    return rows


def test_rows_hold_their_pairs_among_distractors_and_ask_for_one_value_by_its_key():
    bundle = build_data(CFG, seed=3)
    assert bundle.vocab_size == QUERY + 1 and bundle.answers_only
    for i in range(5):
        x, y = bundle.train(i)
        assert x.shape == y.shape == (12, 64) and x.dtype == y.dtype == torch.int64
        assert x.min() >= 0 and x.max() <= QUERY
        for row in _read(x, y):
            assert row["marker"] == QUERY and row["query_key"] < K
            assert len(row["earlier"]) == 1  # the queried key appears once before the query, nowhere else
            assert len(row["keys"]) == len(set(row["keys"])) == CFG["num_pairs"]  # no key repeated within a row
            assert all(K <= v < K + V for v in row["after_keys"])  # every key is followed by its value
            assert row["scored"] == 1 and row["target"] == row["value_after_key"]  # the answer: the key's value


def test_distances_fill_every_bucket_of_every_batch_and_match_query_distances():
    bundle = build_data(CFG, seed=0)
    edges = CFG["distance_edges"]
    seen = []
    for i in range(20):
        x, y = bundle.train(i)
        distances = np.array([r["distance"] for r in _read(x, y)])
        assert query_distances(x).tolist() == distances.tolist()
        assert distances.min() >= edges[0] and distances.max() < edges[-1]
        per_bucket = np.histogram(distances, bins=edges)[0]  # 12 rows, 4 buckets taken in turn: 3 each
        assert per_bucket.tolist() == [3, 3, 3, 3], per_bucket
        seen += distances.tolist()
    assert min(seen) == 3 and max(seen) >= 60  # the drawn distances reach both ends of the range
    assert bucket_labels(edges) == ["3-7", "8-11", "12-31", "32-63"]


def test_rows_depend_only_on_seed_and_batch_index():
    a, b, c = build_data(CFG, seed=1), build_data(CFG, seed=1), build_data(CFG, seed=2)
    for i in (0, 7):
        assert all(torch.equal(u, v) for u, v in zip(a.train(i), b.train(i), strict=True))
        assert not torch.equal(a.train(i)[0], c.train(i)[0])
    assert not torch.equal(a.train(0)[0], a.train(1)[0])
    assert all(torch.equal(u[0], v[0]) for u, v in zip(a.val, b.val, strict=True))
    assert all(torch.equal(u[0], v[0]) for u, v in zip(a.selection, c.selection, strict=True))  # for every seed


def test_values_carry_no_information_without_the_pair():
    """Chance is 1 / num_values: the answer is uniform over the value ids, whatever the distance."""
    bundle = build_data({**CFG, "batch_size": 400, "num_values": 4}, seed=0)
    _, y = bundle.train(0)
    counts = np.bincount(y[:, -1].numpy() - K, minlength=4)
    assert bundle.info["chance_accuracy"] == 1 / 4
    # 400 draws of a uniform 4-way choice: each count 100 +- 8.7; 5 sd apart from the mean is a broken generator
    assert np.all(np.abs(counts - 100) < 5 * np.sqrt(400 * 0.25 * 0.75)), counts


def test_default_edges_double_from_8_to_the_sequence():
    assert default_edges(128) == [3, 8, 16, 32, 64, 128]
    assert default_edges(100) == [3, 8, 16, 32, 64, 100]
    assert default_edges(8) == [3, 8]


def test_densest_rows_still_fit_every_pair():
    """seq_len = 3 x num_pairs + 1, the least the source accepts: every row is built, nearest and farthest alike."""
    cfg = {**CFG, "seq_len": 16, "distance_edges": [3, 4, 15, 16], "batch_size": 30}
    for i in range(10):
        x, y = build_data(cfg, seed=0).train(i)
        for row in _read(x, y):
            assert len(row["keys"]) == 5 and row["target"] == row["value_after_key"]


def test_several_queries_each_ask_for_their_own_pair_by_content():
    """num_queries = 3: the row ends QUERY k0 v0 k1 v1 k2 v2; each scored target is the value that followed its key
    earlier in the row, read independently of the generator; pair 0's distance still fills every bucket."""
    cfg = {**CFG, "num_queries": 3, "distance_edges": [3, 8, 12, 32, 60]}
    bundle = build_data(cfg, seed=5)
    for i in range(5):
        x, y = bundle.train(i)
        scored = (y != IGNORE).any(0).nonzero().flatten().tolist()
        assert scored == [59, 61, 63] and bool((y[:, scored] != IGNORE).all())
        assert bool((x[:, 58] == QUERY).all())
        distances = query_distances(x, scored)
        for r, (xr, yr) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
            assert len({xr[p] for p in scored}) == 3 and all(xr[p] < K for p in scored)
            for j, p in enumerate(scored):
                earlier = [t for t in range(58) if xr[t] == xr[p]]
                assert len(earlier) == 1 and yr[p] == xr[earlier[0] + 1]
                assert distances[r, j] == p - earlier[0]
        assert np.histogram(distances[:, 0].numpy(), bins=cfg["distance_edges"])[0].tolist() == [3, 3, 3, 3]


class _Oracle(torch.nn.Module):
    """Reads each query's value from the row (an independent lookup), right only where the distance is below
    `reach`: the accuracy per bucket is then known exactly."""

    def __init__(self, reach: int, vocab: int):
        super().__init__()
        self.reach, self.vocab, self.anchor = reach, vocab, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*x.shape, self.vocab)
        for b, row in enumerate(x.tolist()):
            for p in range(2, len(row)):
                earlier = [t for t in range(p) if row[t] == row[p] and row[p] < K]
                if earlier and p - earlier[0] < self.reach:
                    logits[b, p, row[earlier[0] + 1]] = 1.0
        return logits


def test_accuracy_by_distance_scores_every_query_in_its_own_bucket():
    cfg = {**CFG, "num_queries": 3, "distance_edges": [3, 12, 32, 60]}
    bundle = build_data(cfg, seed=2)
    scored = [59, 61, 63]
    got = accuracy_by_distance(_Oracle(12, bundle.vocab_size), bundle.val, cfg["distance_edges"])
    distance = torch.cat([query_distances(x, scored) for x, _ in bundle.val]).flatten()
    inside = distance < 60
    assert sum(got["counts"].values()) == int(inside.sum())  # every query in range counted once
    assert got["accuracy_by_distance"]["3-11"] == 1.0 and got["accuracy_by_distance"]["12-31"] <= 1 / V * 4
    assert got["counts"]["3-11"] == int((distance < 12).sum())


BAD = {
    "pairs past the keys": (["data.num_pairs=20", "data.num_keys=16"], ["data.num_pairs: got 20",
                                                                        "at most data.num_keys=16"]),
    "sequence too short": (["data.seq_len=12", "data.num_pairs=4"], ["data.seq_len: got 12", "at least 3 x "
                                                                     "data.num_pairs + 2 x data.num_queries - 1 = 13"]),
    "queries past the pairs": (["data.num_queries=5"], ["data.num_queries: got 5", "1 to data.num_pairs=4"]),
    "edge past the queries": (["data.num_queries=4", "data.distance_edges=[3,8,128]"],
                              ["data.distance_edges: got [3, 8, 128]", "to 122", "the farthest possible is 121"]),
    "edges not increasing": (["data.distance_edges=[3,20,10]"], ["data.distance_edges: got [3, 20, 10]",
                                                                 "strictly increasing"]),
    "edge below 3": (["data.distance_edges=[1,8]"], ["data.distance_edges: got [1, 8]", "from 3"]),
    "edge past seq_len": (["data.distance_edges=[3,8,200]"], ["data.distance_edges: got [3, 8, 200]",
                                                              "data.seq_len=128"]),
    "one edge": (["data.distance_edges=[3]"], ["data.distance_edges: got [3]", "at least two"]),
    "batch below buckets": (["data.batch_size=4"], ["data.batch_size: got 4", "at least the number of distance "
                                                    "buckets, 5"]),
    "ids past the vocabulary": (["data.num_keys=200", "data.num_values=100"], ["model.vocab_size: got 264",
                                                                               "at least 317"]),
    "seq_len past the model": (["data.seq_len=512"], ["data.seq_len: got 512", "model.max_seq_len=256"]),
}  # fmt: skip


@pytest.mark.parametrize("case", tiered(BAD, ("pairs past the keys", "edges not increasing")))  # fast: two of them
def test_bad_settings_are_one_error_line(case, tmp_path, monkeypatch, capsys):
    overrides, expected = BAD[case]
    argv = ["data=retrieval", "data.seq_len=128", *overrides, f"hydra.run.dir={tmp_path / 'run'}", "logger=none"]
    assert_user_error(cli_error(argv, tmp_path, monkeypatch, capsys), expected)


def test_dry_run_prices_a_retrieval_run_from_the_accounting(tmp_path, capsys):
    overrides = ["data=retrieval", "data.seq_len=128", f"hydra.run.dir={tmp_path / 'run'}"]
    plans = planned_jobs([*overrides, "dry_run=true"])
    assert dry_run(plans) == 0
    assert "1 job(s) in 1 plan(s)" in capsys.readouterr().out
    job = plans[0][-1]
    cost = job_cost(job)
    model = ModelConfig.from_dict(job.cfg.model)
    assert cost.tokens_per_step == 32 * 128
    assert cost.flops_per_step == 32 * training_flops(model, 128)
    assert not (tmp_path / "run").exists()


# The done-when of issue 28 on a budget: 4 layers, window 4, rows of 32 tokens. All-local reaches at most 4 x (4 - 1)
# = 12 tokens back (each layer sees the 3 tokens before it), so no information from a pair 16 or more tokens back
# reaches the query: accuracy there is chance, 1/16, however long it trains. 3:1 (the last layer global) can retrieve
# at any distance. lr 3e-3 and batch 64: the global model leaves its plateau after ~250 steps (pilot, seed 0; at lr
# 1e-2 or batch 32 it had not within 400); init_std 0.1 as in the MQAR tests; the post-norm gains at 1/sqrt(2L), the
# init the pilot ran (with unit gains, the presets' default since 2026-12-08, it was still on the plateau at 350).
RETRIEVAL = ["model=tiny", "model.n_layers=4", "model.d_model=64", "model.mlp_hidden=128", "model.n_heads=2",
             "model.n_kv_heads=2", "model.init_std=0.1", "model.window=4", "model.max_seq_len=32",
             "model.rope_base_global=10000.0", "model.post_norm_init=scaled", "data=retrieval", "data.seq_len=32",
             "data.batch_size=64",
             "data.num_keys=16", "data.num_values=16", "data.num_distractors=16", "data.distance_edges=[3,4,6,16,32]",
             "optim.schedule=constant", "optim.lr=3e-3", "optim.warmup_steps=20", "logger=csv",
             "trainer.log_every_n_steps=10", "trainer.progress_bar=false", "trainer.precision=32-true"]  # fmt: skip
BEYOND_REACH = "16-31"


def _train(tmp_path, pattern: str, steps: int) -> tuple[dict, list[dict]]:
    from workbench.training.run import run

    overrides = [*RETRIEVAL, f"model.layer_pattern={pattern}", f"trainer.max_steps={steps}",
                 f"trainer.val_check_interval={steps}"]  # fmt: skip
    results = run(compose_cfg(overrides, None), tmp_path / pattern)
    with (tmp_path / pattern / "metrics.csv").open(newline="") as f:
        return results, list(csv.DictReader(f))


@pytest.mark.slow
def test_all_local_falls_to_chance_beyond_its_reach_where_a_global_layer_retrieves(tmp_path, one_thread):
    local, local_log = _train(tmp_path, "local", 150)
    mixed, mixed_log = _train(tmp_path, "3:1", 350)
    chance = local["retrieval"]["chance_accuracy"]
    assert chance == 1 / 16
    for results in (local, mixed):
        assert results["retrieval"]["counts"] == {"3-3": 128, "4-5": 128, "6-15": 128, BEYOND_REACH: 128}
    acc, acc_mixed = local["retrieval"]["accuracy_by_distance"], mixed["retrieval"]["accuracy_by_distance"]
    # 128 rows at chance: the count of hits is Binomial(128, 1/16), mean 8, sd 2.7; 0.2 is 26 hits, 6.6 sd above
    assert acc[BEYOND_REACH] < 0.2, acc
    assert acc["3-3"] > 0.8, acc  # the local model did learn: it fails only where it cannot see
    assert min(acc_mixed.values()) > 0.8, acc_mixed
    for log in (local_log, mixed_log):  # the answer tokens' loss and accuracy at the logging interval
        logged = [r for r in log if r.get("train/answer_accuracy")]
        assert [int(r["step"]) for r in logged][:3] == [9, 19, 29]
        assert all(0 <= float(r["train/answer_accuracy"]) <= 1 and float(r["train/answer_loss"]) > 0 for r in logged)
    assert float(mixed_log_last(mixed_log)["train/answer_accuracy"]) > 0.8


def mixed_log_last(log: list[dict]) -> dict:
    return [r for r in log if r.get("train/answer_accuracy")][-1]
