"""Forced alignment of a latent store's texts with a trained model's ASR CTC: the points a forced text pointer reads.

  python -m data_prep.align_latents --latents outputs/demo/latents/train --aligner outputs/demo/aligner \
      [--text_tokenizer outputs/demo/unified/final/text_tokenizer]
  python -m data_prep.align_latents --latents outputs/demo/latents/train --model outputs/demo/unified/final

The aligner is a CTCAligner (data_prep/train_aligner.py: non-causal, trained only for this) or a unified model's own
ASR CTC (causal, so it runs ahead of the sound on predictable words: docs/learning.md section 22). An aligner that
spells another tokenizer's tokens (characters) is given the text tokenizer of the model that will read the points:
they are moved to count its tokens (holitok_slm/infer/align.py retokenize_points).
Writes LATENTS/points/ (holitok_slm/train/latent_store.py): per shard, "points" [sum T] float32, each frame's
fractional position in its item's text tokens (holitok_slm/infer/align.py; NaN for an item that cannot be aligned:
more tokens than CTC steps), then index.json with the aligning model and a probe of its text tokenizer (training
checks that its own tokenizer splits the probe the same way). Resumable: shards are written atomically and a rerun
skips the ones already there (`--overwrite` redoes them all, e.g. with a better model).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from holitok_slm.infer.align import AlignmentError, align_points, align_points_with
from holitok_slm.model.ctc_aligner import CTCAligner
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.text_tokenizer import TextTokenizer
from holitok_slm.train.latent_store import POINTS_DIR, POINTS_FORMAT, BadItem, LatentStore, shard_name


def align_store(latents: str | Path, model: UnifiedModel | CTCAligner, model_name: str, overwrite: bool = False,
                progress: bool = True, tokenizer: TextTokenizer | None = None) -> dict:
    """Aligns every shard of the store at `latents` with a unified model's CTC or a CTCAligner (skipping shards done
    unless `overwrite`); a CTCAligner's points are counted in `tokenizer`'s tokens when given. Returns the index."""
    if tokenizer is not None and not isinstance(model, CTCAligner):
        raise ValueError("a unified model aligns in its own text tokenizer; a tokenizer is only for a CTCAligner")
    tokenizer = tokenizer or model.text_tokenizer
    align = (lambda x, text: align_points_with(model, x, text, tokenizer)) if isinstance(model, CTCAligner) else (
        lambda x, text: align_points(model, x, text))
    store = LatentStore(latents)
    out = store.path / POINTS_DIR
    out.mkdir(exist_ok=True)
    unaligned: list[dict] = []
    items_by_shard: dict[int, list[int]] = {}
    for i, shard in enumerate(store.shard_of.tolist()):
        items_by_shard.setdefault(shard, []).append(i)
    bar = tqdm(sorted(items_by_shard), desc="aligning", unit="shard", disable=not progress)
    for shard in bar:
        target = out / f"{shard_name(shard)}.safetensors"
        if target.exists() and not overwrite:
            continue
        pieces = []
        for i in items_by_shard[shard]:
            try:
                item = store.load(i)
                pieces.append(align(item["latents"], item["text"]))
            except (AlignmentError, BadItem) as err:  # its frames stay NaN: training skips it and says why
                unaligned.append({"id": store.ids[i], "reason": str(err)})
                pieces.append(torch.full((int(store.num_frames[i]),), float("nan")))
        tmp = out / f"{shard_name(shard)}.safetensors.partial"
        save_file({"points": torch.cat(pieces).contiguous()}, str(tmp))
        os.replace(tmp, target)
    first = store.meta(0)["text"] if len(store) else ""
    index = {"format": POINTS_FORMAT, "model": model_name,
             "aligner_kind": "ctc_aligner" if isinstance(model, CTCAligner) else "unified",
             "num_shards": int(store.index["num_shards"]),
             "probe": {"text": first, "ids": tokenizer.encode(first.strip())},
             "unaligned_this_run": unaligned, "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latents", required=True, help="a latent store (data_prep/extract_latents.py)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--aligner", help="a CTCAligner folder (data_prep/train_aligner.py)")
    source.add_argument("--model", help="a UnifiedModel folder trained with flow.asr_ctc_weight > 0")
    parser.add_argument("--text_tokenizer", default=None,
                        help="with --aligner: count the points in this tokenizer's tokens (the text_tokenizer folder "
                             "of the model that will train on them), e.g. when the aligner spells characters")
    parser.add_argument("--overwrite", action="store_true", help="realign shards already aligned")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = CTCAligner.from_pretrained(args.aligner) if args.aligner else UnifiedModel.from_pretrained(args.model)
    if args.text_tokenizer and not args.aligner:
        parser.error("--text_tokenizer goes with --aligner (a unified model aligns in its own tokenizer)")
    tokenizer = TextTokenizer.load(args.text_tokenizer) if args.text_tokenizer else None
    index = align_store(args.latents, model, str(Path(args.aligner or args.model).resolve()), args.overwrite,
                        tokenizer=tokenizer)
    print(f"aligned {args.latents} ({index['num_shards']} shards); {len(index['unaligned_this_run'])} items could not "
          f"be aligned -> {Path(args.latents) / POINTS_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
