"""A run dir exports to a folder `transformers` alone reads back: the same function of the same text, in float64."""

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench import build_model, get_preset
from workbench.checkpoints import CONFIG_FILE, LAST, MODEL_CONFIG_KEY
from workbench.data.byte_tokenizer import EOS, SPECIALS
from workbench.hf_export import export_run

SMALL = get_preset("tiny").replace(d_model=64, n_layers=2, mlp_hidden=128, window=8, max_seq_len=64)
TEXT = "def f(x):\n    return x + 1  # é\n"


def fake_run(run_dir, cfg=SMALL, source="stdlib"):
    """What a finished run leaves: checkpoints/last.ckpt (LMModule's keys) and config.yaml (its data node)."""
    model = build_model(cfg)
    (run_dir / LAST).parent.mkdir(parents=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, MODEL_CONFIG_KEY: cfg.to_dict()}, run_dir / LAST)
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump({"data": {"source": source}}))
    return model.eval()


def test_the_saved_folder_computes_the_run_model_on_its_tokens(tmp_path):
    ours = fake_run(tmp_path / "run")
    export_run(tmp_path / "run", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True, dtype=torch.float64).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == [EOS, *TEXT.encode()]
    with torch.no_grad():
        expected, got = ours.double()(ids), hf(ids).logits
    # float64 on both sides: only summation order differs, so the gap is a few ulps of the logits' scale
    tol = 64 * torch.finfo(torch.float64).eps * expected.abs().max().item()
    assert (got - expected).abs().max().item() <= tol
    assert (hf.config.eos_token_id, hf.config.pad_token_id) == (EOS, SPECIALS["pad"])
    assert hf.generation_config.eos_token_id == EOS


def test_a_data_source_without_text_is_refused(tmp_path):
    fake_run(tmp_path, source="mqar")
    with pytest.raises(ValueError, match=r"data\.source: got 'mqar'"):
        export_run(tmp_path)


def test_a_model_gemma_cannot_express_is_refused(tmp_path):
    fake_run(tmp_path, SMALL.replace(mlp="swiglu"))
    with pytest.raises(ValueError, match=r"mlp: got 'swiglu'"):
        export_run(tmp_path)


def test_a_run_without_its_config_names_the_file(tmp_path):
    fake_run(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.yaml does not exist"):
        export_run(tmp_path)
