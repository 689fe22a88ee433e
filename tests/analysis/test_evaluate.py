"""`python -m analysis.evaluate`: a tiny trained model, exported, scored by lm-evaluation-harness offline on the
shipped local task; the harness's loglikelihoods equal the run's own model's, computed here in float64."""

import json
import os
import subprocess
import sys

import pytest
import torch

from analysis.evaluate import SCORES_FILE, load_tasks, main
from tests.workbench.train_helpers import FAST, REPO, compose_cfg
from workbench.checkpoints import load_model_from_checkpoint
from workbench.data.byte_tokenizer import EOS
from workbench.training.jobs import train

TASK, ROWS, LIMIT = "python_syntax", 32, 8
# max_seq_len 128 holds every row whole (the longest is ~100 bytes), so nothing is truncated on either side
SHORT = ["logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "model.layer_pattern=1:1",
         "model.window=16", "model.max_seq_len=128", *FAST, "data.seq_len=32"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lmeval")
    train(compose_cfg(SHORT, tmp / "cache"), tmp / "run")
    return tmp / "run"


def reference_loglikelihood(model: torch.nn.Module, context: str, continuation: str) -> float:
    """log p(continuation | EOS + context) from the run's model in float64, by the harness's convention that the
    context's trailing whitespace is scored with the continuation."""
    cut = len(context.rstrip())
    context, continuation = context[:cut], context[cut:] + continuation
    ctx, cont = [EOS, *context.encode()], list(continuation.encode())
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ctx + cont]))[0], dim=-1)
    return sum(logp[len(ctx) - 1 + i, t].item() for i, t in enumerate(cont))


def error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.slow
def test_harness_scores_equal_the_run_model_in_float64(run, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    args = [str(run), "--tasks", TASK, "--limit", str(LIMIT), "--batch-size", "3", "--log-samples"]
    proc = subprocess.run([sys.executable, "-m", "analysis.evaluate", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert TASK in proc.stdout and "acc_norm" in proc.stdout
    entry = json.loads((run / SCORES_FILE).read_text())["tasks"][TASK]
    assert (entry["n_samples"], entry["n_docs"], entry["limit"]) == (LIMIT, ROWS, LIMIT)
    samples = [json.loads(line) for line in (run / "lm_eval_samples" / f"{TASK}.jsonl").read_text().splitlines()]
    assert sorted(s["doc_id"] for s in samples) == list(range(LIMIT))

    model = load_model_from_checkpoint(run).double()
    eps = torch.finfo(torch.float32).eps  # the harness runs the exported model in float32
    correct = []
    for s in samples:
        doc, got = s["doc"], [ll for ll, _greedy in s["filtered_resps"]]
        expected = [reference_loglikelihood(model, doc["context"], choice) for choice in doc["choices"]]
        # a few float32 ulps of the log-probabilities' scale per scored byte (measured: under 0.04 of this)
        tol = [8 * eps * len(c.encode()) * max(1.0, abs(e)) for c, e in zip(doc["choices"], expected, strict=True)]
        assert all(abs(g - e) <= t for g, e, t in zip(got, expected, tol, strict=True)), (doc, got, expected)
        ranked = sorted(range(len(expected)), key=expected.__getitem__, reverse=True)
        if expected[ranked[0]] - expected[ranked[1]] > 2 * max(tol):  # a near tie may rank either way in float32
            assert s["acc"] == float(ranked[0] == doc["answer"])
        correct.append(s["acc"])
    assert entry["metrics"]["acc,none"] == pytest.approx(sum(correct) / LIMIT)
    assert 0 <= entry["metrics"]["acc_norm,none"] <= 1


@pytest.mark.slow
def test_an_unknown_task_name_is_one_error_line(run, capsys):
    err = error_line(capsys, [str(run), "--tasks", "no_such_task"])
    assert "--tasks: got 'no_such_task'" in err and TASK in err


def test_a_missing_run_dir_is_one_error_line(tmp_path, capsys):
    assert f"run dir: {tmp_path / 'nope'} does not exist" in error_line(
        capsys, [str(tmp_path / "nope"), "--tasks", TASK]
    )


@pytest.mark.parametrize("results", [None, {"status": "failed"}])
def test_a_run_that_did_not_complete_names_results_json(tmp_path, capsys, results):
    if results is not None:
        (tmp_path / "results.json").write_text(json.dumps(results))
    err = error_line(capsys, [str(tmp_path), "--tasks", TASK])
    assert str(tmp_path / "results.json") in err and ("'failed'" in err if results else "did not complete" in err)


@pytest.mark.parametrize("text", ["task: [unclosed\n", "not_a_task: 1\n"])
def test_an_unreadable_task_yaml_names_the_file(tmp_path, capsys, text):
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed"}))
    yaml_path = tmp_path / "task.yaml"
    yaml_path.write_text(text)
    assert f"--tasks: {yaml_path} is not a readable lm-eval task" in error_line(
        capsys, [str(tmp_path), "--tasks", str(yaml_path)]
    )


@pytest.mark.parametrize("flag", ["--limit", "--batch-size"])
def test_a_count_below_one_names_the_flag(tmp_path, capsys, flag):
    assert f"{flag}: got 0" in error_line(capsys, [str(tmp_path), "--tasks", TASK, flag, "0"])


def test_the_shipped_task_loads_offline_with_its_rows():
    """lm-eval builds it from the folder alone: 32 documents, 4 distinct choices each, the answer among them."""
    task = load_tasks([TASK]).load(TASK)["tasks"][TASK]
    docs = list(task.test_docs())
    assert len(docs) == ROWS
    assert all(len(set(d["choices"])) == 4 and 0 <= d["answer"] < 4 for d in docs)
    assert len({d["answer"] for d in docs}) == 4  # the valid choice is not always in one place
