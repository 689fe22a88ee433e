"""Quick QAT experiment: val loss of a briefly trained `tiny` in fp32, bf16, post-training int4 and int4 QAT.

    python -m benchmarks.quant_experiment            # quick mode, < 3 minutes on 2 cores
    python -m benchmarks.quant_experiment --steps 40 --qat-steps 20   # smoke test

Data: the project's `stdlib` source (`workbench.data`: the standard library's Python files, byte tokens, split by
document, its fixed val windows); scores: `workbench.evaluate.mean_loss`. A plain torch loop (fp32) with a
learning-rate schedule and gradient clipping.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tabulate import tabulate
from torch import nn

from workbench.data import build_data
from workbench.data.bundle import IGNORE, Batch, DataBundle
from workbench.evaluate import mean_loss
from workbench.model import build_model
from workbench.presets import get_preset
from workbench.quant.fake_quant import export_model, export_weight, quantize_model_ptq, remove_fake_quant
from workbench.quant.formats import get_format
from workbench.quant.qat import prepare_qat, qat_loss

CACHE_DIR = ".cache/workbench/tokens"  # the training app's default data.cache_dir


def stdlib_data(seq_len: int, batch_size: int, val_tokens: int, seed: int, cache_dir: str = CACHE_DIR) -> DataBundle:
    """The `stdlib` source as a training run with `data=stdlib` at these sizes reads it."""
    cfg = {"source": "stdlib", "seq_len": seq_len, "batch_size": batch_size, "val_fraction": 0.02,
           "val_tokens": val_tokens, "selection_fraction": None, "selection_tokens": None, "cache_dir": cache_dir,
           "passkey_mix": 0.0, "passkey_digits": 5}  # fmt: skip
    return build_data(cfg, seed)


def train(model: nn.Module, loss_fn: Callable[[nn.Module, Batch], torch.Tensor], data: DataBundle, steps: int,
          lr: float, first_batch: int) -> None:  # fmt: skip
    """AdamW with linear warm-up then cosine decay on training batches `first_batch`, `first_batch + 1`, ..."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + torch.cos(torch.tensor(s / steps * torch.pi)).item()))
    )
    model.train()
    for i in range(steps):
        loss_fn(model, data.train(first_batch + i)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE)


def stored_bytes(model, fmt: str, embedding: bool) -> int:
    """Bytes of the exported matrices (scales included); fp32 is twice bf16; an unquantised embedding is bf16."""
    if fmt == "fp32":
        return 2 * stored_bytes(model, "bf16", embedding)
    total = sum(s.nbytes for s in export_model(model, fmt).values())
    return total + export_weight(model.embed.weight, fmt if embedding else "bf16").nbytes


def run(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    cfg = get_preset("tiny").replace(max_seq_len=args.seq_len)
    data = stdlib_data(args.seq_len, args.batch_size, args.val_windows * args.seq_len, args.seed, args.cache_dir)
    val = data.val
    fmt = get_format(args.fmt)
    t0 = time.time()

    model = build_model(cfg)
    train(model, next_token_loss, data, args.steps, args.lr, first_batch=0)
    fp32 = mean_loss(model, val)
    rows = [{"weights": "fp32", "val_loss": fp32["loss"], "fmt": "fp32"}]
    for name in ("bf16", args.fmt):
        ptq = quantize_model_ptq(copy.deepcopy(model), name, embedding=args.embedding)
        rows.append({"weights": f"{name} PTQ", "val_loss": mean_loss(ptq, val)["loss"], "fmt": name})

    student, teacher = prepare_qat(copy.deepcopy(model), fmt, embedding=args.embedding)
    # QAT continues on the batches after pre-training's
    train(student, lambda m, b: qat_loss(m, teacher, b), data, args.qat_steps, args.qat_lr, first_batch=args.steps)
    # the deployed model: latent weights replaced by their quantised values, i.e. exactly what export stores
    deployed = quantize_model_ptq(remove_fake_quant(student), fmt, embedding=args.embedding)
    rows.append({"weights": f"{args.fmt} QAT", "val_loss": mean_loss(deployed, val)["loss"], "fmt": args.fmt})

    for row in rows:
        row["weight_bytes"] = stored_bytes(model, row["fmt"], args.embedding)
    embedding = "quantised" if args.embedding else "in bf16"
    print(f"tiny, {args.steps} steps + {args.qat_steps} QAT steps of {args.fmt}, {fp32['tokens']:,} val tokens "
          f"(stdlib) in windows of {args.seq_len} bytes, embedding {embedding}, {time.time() - t0:.0f} s")  # fmt: skip
    table = [[r["weights"], f"{r['val_loss']:.4f}", r["weight_bytes"]] for r in rows]
    print(tabulate(table, ["weights", "val loss", "matrix bytes"], intfmt=","))
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fmt", default="int4", choices=["int4", "int4_block32", "fp8"])
    p.add_argument("--steps", type=int, default=500, help="pre-training steps")
    p.add_argument("--qat-steps", type=int, default=250)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--qat-lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--cache-dir", default=CACHE_DIR, help="where the stdlib's tokens are cached (data.cache_dir)")
    p.add_argument("--val-windows", type=int, default=256)
    p.add_argument("--embedding", action=argparse.BooleanOptionalAction, default=True, help="quantise the embedding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="more threads than free cores slows torch down a lot")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    return run(args)


if __name__ == "__main__":
    main()
