"""A finished run as a `transformers` folder: its trained model (`interop.to_hf`) and its data source's tokenizer.

The folder loads with `AutoModelForCausalLM` and `AutoTokenizer` alone (no workbench code), which is what
lm-evaluation-harness's `hf` model and any other `transformers` tool read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from transformers import PreTrainedTokenizerFast

from workbench.checkpoints import CONFIG_FILE, load_model_from_checkpoint
from workbench.data.hf_tokenizer import for_data
from workbench.interop import to_hf


def run_data_config(run_dir: str | Path) -> dict[str, Any]:
    """The `data` node of a run dir's resolved config.yaml (which tokens the model was trained on)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a run dir holds the config it ran with)")
    return OmegaConf.to_container(OmegaConf.load(path).data, resolve=True)


def export_run(
    run_dir: str | Path, out_dir: str | Path | None = None
) -> tuple[torch.nn.Module, PreTrainedTokenizerFast]:
    """The run's model as a `transformers` model (eval mode, CPU) and its tokenizer; both saved to `out_dir` if
    given. Raises ValueError for a model `to_hf` cannot express or a data source whose tokens are not text."""
    tokenizer = for_data(run_data_config(run_dir))
    model = to_hf(load_model_from_checkpoint(run_dir)).eval()
    # Gemma's config defaults (bos 2, eos 1, pad 0) are ids of another vocabulary: use the tokenizer's
    for config in (model.config, model.generation_config):
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer
