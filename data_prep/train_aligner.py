"""Trains a CTCAligner (a small non-causal CTC reader of latents) on a latent store, for data_prep.align_latents.

  python -m data_prep.train_aligner --latents outputs/demo/latents/train \
      --text_tokenizer outputs/demo/unified/text_tokenizer --out outputs/demo/aligner [--steps 1500]

The text tokenizer must be the one of the unified model that will read the alignment (its points count that
tokenizer's tokens; training checks it). The last `--held_out` items are not trained on: the run ends by reporting
the greedy CTC's token error rate on them, so an aligner that does not read is seen before it is used.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import jiwer
import torch
import torch.nn.functional as F
from tqdm import tqdm

from holitok_slm.model.ctc_aligner import CTCAligner, CTCAlignerConfig
from holitok_slm.text_tokenizer import TextTokenizer
from holitok_slm.train.latent_store import BadItem, LatentStore


def greedy_error_rate(aligner: CTCAligner, items: list[dict]) -> float:
    """Token error rate of the aligner's greedy CTC reading of `items` against their texts (jiwer over token ids)."""
    reads, truths = [], []
    with torch.no_grad():
        for item in items:
            best = aligner(item["latents"][None])[0].argmax(-1).tolist()
            reads.append(" ".join(str(k) for i, k in enumerate(best)
                                  if k != aligner.blank and (i == 0 or k != best[i - 1])))
            truths.append(" ".join(map(str, aligner.text_tokenizer.encode(item["text"].strip()))))
    return float(jiwer.wer(truths, reads))


def train_aligner(latents: str | Path, tokenizer: TextTokenizer, steps: int = 1500, batch_size: int = 16,
                  lr: float = 1e-3, seed: int = 0, held_out: int = 32, config: CTCAlignerConfig | None = None,
                  progress: bool = True) -> tuple[CTCAligner, dict]:
    """The trained aligner and a summary (losses, held-out token error rate, seconds)."""
    store = LatentStore(latents)
    if len(store) <= held_out:
        raise ValueError(f"{latents} has {len(store)} items; need more than --held_out {held_out}")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = config or CTCAlignerConfig()
    cfg.latent_dim = store.latent_dim
    aligner = CTCAligner(cfg, tokenizer)
    train_ids = list(range(len(store) - held_out))
    sample = torch.cat([store.load(i)["latents"] for i in train_ids[:200]])
    aligner.latent_mean.copy_(sample.mean(0))
    aligner.latent_std.copy_(sample.std(0).clamp(min=1e-3))
    optimizer = torch.optim.AdamW(aligner.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start, losses = time.time(), []
    aligner.train()
    bar = tqdm(range(steps), desc="aligner", disable=not progress)
    for _ in bar:
        items = []
        while len(items) < batch_size:
            try:
                items.append(store.load(rng.choice(train_ids)))
            except BadItem:
                continue
        labels = [tokenizer.encode(item["text"].strip()) for item in items]
        lengths = torch.tensor([item["latents"].shape[0] for item in items])
        padded = torch.zeros(len(items), int(lengths.max()), store.latent_dim)
        for i, item in enumerate(items):
            padded[i, :lengths[i]] = item["latents"]
        log_probs = aligner(padded, lengths)
        loss = F.ctc_loss(log_probs.transpose(0, 1), torch.tensor([k for label in labels for k in label]),
                          lengths * cfg.steps_per_frame, torch.tensor([len(label) for label in labels]),
                          blank=aligner.blank, zero_infinity=True)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(aligner.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    aligner.eval()
    held = [store.load(i) for i in range(len(store) - held_out, len(store))]
    window = max(1, min(100, steps // 4))
    summary = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "seconds": round(time.time() - start, 1),
               "loss_window": window, "loss_first": sum(losses[:window]) / window,
               "loss_last": sum(losses[-window:]) / window,
               "held_out_items": held_out, "held_out_token_error_rate": greedy_error_rate(aligner, held)}
    return aligner, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", required=True, help="a latent store (data_prep/extract_latents.py)")
    parser.add_argument("--text_tokenizer", required=True,
                        help="the text tokenizer folder of the unified model that will read the alignment")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held_out", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    aligner, summary = train_aligner(args.latents, TextTokenizer.load(args.text_tokenizer), args.steps,
                                     args.batch_size, args.lr, args.seed, args.held_out)
    aligner.save_pretrained(args.out)
    (Path(args.out) / "training.json").write_text(json.dumps(summary, indent=1))
    print(f"aligner -> {args.out}: CTC loss {summary['loss_first']:.3f} -> {summary['loss_last']:.3f}, "
          f"held-out token error rate {summary['held_out_token_error_rate']:.1%} ({summary['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
