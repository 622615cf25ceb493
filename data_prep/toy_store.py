"""Writes a random latent store (real format, random latents, grammar sentences) for smoke runs and tests.

It lets the training loop be exercised without audio or a tokenizer: `python -m data_prep.toy_store OUT`.
Planted bad items (`plant_bad=True`) cover what training itself must catch: NaN latents, an over-long item, an
empty transcript and a too-short item.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from data_prep.sentences import SentenceGenerator
from holitok_slm.train.latent_store import FORMAT, write_shard

PLANTED = {"bad-nan": "non-finite", "bad-long": "over-long", "bad-empty-text": "empty-text", "bad-short": "too-short"}


def write_toy_store(out: str | Path, num_items: int = 24, latent_dim: int = 16, shard_size: int = 10,
                    frames: tuple[int, int] = (20, 60), seed: int = 0, plant_bad: bool = False,
                    long_frames: int = 1000, semantic_dim: int | None = None) -> dict:
    out = Path(out)
    gen = SentenceGenerator(seed)
    torch_gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(num_items):
        length = int(torch.randint(frames[0], frames[1] + 1, (), generator=torch_gen))
        rows.append({"id": f"toy-{i:05d}", "text": gen.sentence(12), "speaker": f"spk{i % 3}",
                     "latents": torch.randn(length, latent_dim, generator=torch_gen) * 0.3})
    if plant_bad:
        nan = torch.randn(30, latent_dim, generator=torch_gen)
        nan[5, 3] = float("nan")
        rows += [{"id": "bad-nan", "text": "the latents of this item are broken", "speaker": "spk0", "latents": nan},
                 {"id": "bad-long", "text": "this item is far too long", "speaker": "spk1",
                  "latents": torch.randn(long_frames, latent_dim, generator=torch_gen)},
                 {"id": "bad-empty-text", "text": "  ", "speaker": "spk2",
                  "latents": torch.randn(30, latent_dim, generator=torch_gen)},
                 {"id": "bad-short", "text": "too short", "speaker": "spk2",
                  "latents": torch.randn(2, latent_dim, generator=torch_gen)}]
        # Spread the planted items over the shards instead of leaving them all at the end.
        order = torch.randperm(len(rows), generator=torch_gen).tolist()
        rows = [rows[i] for i in order]
    out.mkdir(parents=True, exist_ok=True)
    num_shards = (len(rows) + shard_size - 1) // shard_size
    frames_total = 0
    for shard in range(num_shards):
        part = rows[shard * shard_size: (shard + 1) * shard_size]
        items = [{"id": r["id"], "text": r["text"], "language": "en", "speaker": r["speaker"], "task": "both",
                  "num_frames": int(r["latents"].shape[0]), "duration": r["latents"].shape[0] / 25} for r in part]
        semantic = None
        if semantic_dim:
            semantic = [torch.randn(r["latents"].shape[0], semantic_dim, generator=torch_gen) for r in part]
        write_shard(out, shard, items, [r["latents"] for r in part], semantic, skipped=[])
        frames_total += sum(item["num_frames"] for item in items)
    index = {"format": FORMAT, "num_shards": num_shards, "num_items": len(rows), "num_frames": frames_total,
             "hours": round(frames_total / 25 / 3600, 4), "latent_dim": latent_dim, "semantic_dim": semantic_dim,
             "frame_rate": 25.0, "tokenizer": "random (toy store)", "manifest": None, "skipped": []}
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--num_items", type=int, default=200)
    parser.add_argument("--latent_dim", type=int, default=16)
    parser.add_argument("--plant_bad", action="store_true")
    args = parser.parse_args(argv)
    print(write_toy_store(args.out, args.num_items, args.latent_dim, plant_bad=args.plant_bad))


if __name__ == "__main__":
    main()
