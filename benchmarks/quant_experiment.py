"""Quick QAT experiment: val loss of a briefly trained `tiny` in fp32, bf16, post-training int4 and int4 QAT.

    python -m benchmarks.quant_experiment            # quick mode, < 3 minutes on 2 cores
    python -m benchmarks.quant_experiment --steps 40 --qat-steps 20   # smoke test

Data: bytes of Python files from the standard library (always present), token id = byte value. A plain torch
loop of `workbench.timing.train_step` (fp32), with a learning-rate schedule and gradient clipping.
"""

from __future__ import annotations

import argparse
import copy
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench.model import build_model
from workbench.presets import get_preset
from workbench.quant.fake_quant import export_model, export_weight, quantize_model_ptq, remove_fake_quant
from workbench.quant.formats import get_format
from workbench.quant.qat import evaluate_quantized, prepare_qat, qat_loss
from workbench.timing import train_step


def stdlib_bytes(n_bytes: int) -> torch.Tensor:
    """The first `n_bytes` bytes of the stdlib's top-level .py files, in sorted order (deterministic)."""
    chunks, total = [], 0
    for f in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        chunks.append(f.read_bytes())
        total += len(chunks[-1])
        if total >= n_bytes:
            break
    return torch.tensor(list(b"".join(chunks)[:n_bytes]), dtype=torch.long)


def windows(data: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Non-overlapping (N, seq_len + 1) windows: inputs and shifted labels."""
    n = (len(data) - 1) // seq_len
    return torch.stack([data[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)])


def train(model, loss_fn, train_windows, steps: int, lr: float, batch_size: int, seed: int) -> None:
    """AdamW with linear warm-up then cosine decay, random batches drawn from `train_windows`."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.95))
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, 0.5 * (1 + torch.cos(torch.tensor(s / steps * torch.pi)).item()))
    )
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = train_windows[torch.randint(len(train_windows), (batch_size,), generator=g)]
        train_step(model, opt, batch, loss_fn=loss_fn, clip_norm=1.0)
        sched.step()


def window_loss(model, batch: torch.Tensor) -> torch.Tensor:
    """Next-token loss of a (N, seq_len + 1) window: the model sees its first seq_len tokens (its max_seq_len)."""
    return F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())


def stored_bytes(model, fmt: str, embedding: bool) -> int:
    """Bytes of the exported matrices (scales included); fp32 is twice bf16; an unquantised embedding is bf16."""
    if fmt == "fp32":
        return 2 * stored_bytes(model, "bf16", embedding)
    total = sum(s.nbytes for s in export_model(model, fmt).values())
    return total + export_weight(model.embed.weight, fmt if embedding else "bf16").nbytes


def run(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    cfg = get_preset("tiny").replace(max_seq_len=args.seq_len)
    data = stdlib_bytes(args.n_bytes)
    split = int(0.9 * len(data))
    train_w, val_w = windows(data[:split], args.seq_len), windows(data[split:], args.seq_len)
    val = list(val_w[: args.val_windows].split(args.batch_size))
    fmt = get_format(args.fmt)
    t0 = time.time()

    model = build_model(cfg)
    train(model, window_loss, train_w, args.steps, args.lr, args.batch_size, args.seed)
    rows = [{"weights": "fp32", "val_loss": evaluate_quantized(model, val), "fmt": "fp32"}]
    for name in ("bf16", args.fmt):
        ptq = quantize_model_ptq(copy.deepcopy(model), name, embedding=args.embedding)
        rows.append({"weights": f"{name} PTQ", "val_loss": evaluate_quantized(ptq, val), "fmt": name})

    student, teacher = prepare_qat(copy.deepcopy(model), fmt, embedding=args.embedding)
    train(student, lambda m, b: qat_loss(m, teacher, b), train_w, args.qat_steps, args.qat_lr, args.batch_size, 1)
    # the deployed model: latent weights replaced by their quantised values, i.e. exactly what export stores
    deployed = quantize_model_ptq(remove_fake_quant(student), fmt, embedding=args.embedding)
    rows.append({"weights": f"{args.fmt} QAT", "val_loss": evaluate_quantized(deployed, val), "fmt": args.fmt})

    for row in rows:
        row["weight_bytes"] = stored_bytes(model, row["fmt"], args.embedding)
    print(f"tiny, {args.steps} steps + {args.qat_steps} QAT steps of {args.fmt}, {len(val_w[: args.val_windows])} "
          f"val windows of {args.seq_len} bytes, embedding {'quantised' if args.embedding else 'in bf16'}, "
          f"{time.time() - t0:.0f} s")  # fmt: skip
    print(f"{'weights':<18}{'val loss':>10}{'matrix bytes':>14}")
    for row in rows:
        print(f"{row['weights']:<18}{row['val_loss']:>10.4f}{row['weight_bytes']:>14,}")
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
    p.add_argument("--n-bytes", type=int, default=1_000_000)
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
