"""Quality per minute: the seed-style reference trained for a fixed wall time with the seed's settings
(AdamW lr 3e-4, dropout 0.2, batch 32, fp32), validated every --val-every steps on the exact val split
(the same fixed windows as Frosty), reporting its best val loss. Compare with Frosty in the same time:

    python bench/quality_per_minute.py --seconds 180
    python train.py trainer.max_time=00:00:03:00            # Frosty's small preset, same 3 minutes
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from bench.common import SeedGPT, corpus_text, machine, model_preset  # noqa: E402
from frosty_lm.data import RandomWindows, fixed_windows  # noqa: E402
from frosty_lm.tokenizer import CharTokenizer  # noqa: E402


@torch.no_grad()
def val_loss(model: SeedGPT, windows, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    x_all, y_all = windows.tensors
    for i in range(0, len(x_all), batch_size):
        logits, _ = model(x_all[i : i + batch_size])
        y = y_all[i : i + batch_size]
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum").item()
        count += int((y != -1).sum())
    model.train()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--model", default="small", help="conf/model preset for the sizes (default small)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args()
    cfg = model_preset(args.model, dropout=args.dropout)
    text = corpus_text()
    tok = CharTokenizer.from_text(text)
    data = tok.encode_tensor(text)
    n_val = int(len(data) * 0.1)
    train, val = data[: len(data) - n_val], data[len(data) - n_val :]
    windows = fixed_windows(val, cfg["block_size"])
    torch.manual_seed(args.seed)
    model = SeedGPT(vocab_size=len(tok), **cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    batches = RandomWindows(train, cfg["block_size"], args.batch_size, seed=args.seed)
    best, step, start = math.inf, 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        x, y = batches.batch(step)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % args.val_every == 0:
            best = min(best, val_loss(model, windows, args.batch_size))
    best = min(best, val_loss(model, windows, args.batch_size))
    print(f"machine: {machine()}")
    print(f"seed-style reference, {args.model} sizes ({cfg['n_layer']} layers, {cfg['n_embd']} wide, context "
          f"{cfg['block_size']}), lr {args.lr}, dropout {args.dropout}, batch {args.batch_size}: {step} steps in "
          f"{time.perf_counter() - start:.0f} s, best val loss {best:.4f} ({best / math.log(2):.4f} bits/char)")


if __name__ == "__main__":
    main()
