"""ASR word error rate of unified-model checkpoints on a latent store: a learning curve that needs no judge.

    python -m data_prep.extract_latents --manifest outputs/demo/corpus/test_seen_voice.jsonl \
        --tokenizer outputs/demo/tokenizer --out outputs/demo/latents/test_seen
    python -m eval.asr_store --store outputs/demo/latents/test_seen --model outputs/demo/unified/step-*/model \
        [--limit 64] [--json curve.json]

The store's transcripts are the references (`eval.asr_wer` normaliser, corpus WER). Each model folder is a
`save_pretrained` folder (training checkpoints carry one); several folders give one line each, so the curve over
training steps shows whether the model reads the audio (held-out WER falls) or memorises sentences (training loss
falls, held-out WER does not). This is the model's own greedy decoding, not the listener's judge (`eval.report`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from eval.asr_wer import score
from holitok_slm.infer.asr import transcribe_latents
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.train.latent_store import LatentStore


def load_items(store: str | Path, limit: int | None = None) -> list[dict]:
    """The first `limit` items of the store, spread over its speakers in turn (so a small limit covers every voice)."""
    store = LatentStore(store)
    by_speaker: dict[str, list[int]] = {}
    for i in range(len(store)):
        by_speaker.setdefault(store.meta(i).get("speaker") or "", []).append(i)
    order = [i for group in zip(*by_speaker.values()) for i in group] if by_speaker else []
    taken = set(order)
    order += [i for i in range(len(store)) if i not in taken]
    return [store.load(i) for i in order[:limit]]


def evaluate(model: UnifiedModel, items: list[dict], batch_size: int = 16) -> dict:
    hypotheses = []
    for start in range(0, len(items), batch_size):
        hypotheses += transcribe_latents(model, [item["latents"] for item in items[start:start + batch_size]])
    report = score([item["text"] for item in items], hypotheses, ids=[item["id"] for item in items])
    return {"wer": report.corpus_wer, "utterances": report.num_utterances,
            "examples": [{"ref": u["reference"], "hyp": u["hypothesis"]} for u in report.utterances[:3]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True, help="latent store folder (data_prep.extract_latents --out)")
    parser.add_argument("--model", required=True, nargs="+", help="save_pretrained folder(s) of the unified model")
    parser.add_argument("--limit", type=int, default=64, help="utterances scored (spread over the voices)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    try:
        items = load_items(args.store, args.limit)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not items:
        print(f"error: {args.store} holds no items", file=sys.stderr)
        return 2
    results = []
    for folder in args.model:
        try:
            model = UnifiedModel.from_pretrained(folder).eval()
        except (OSError, ValueError) as err:
            print(f"error: {folder}: {err}", file=sys.stderr)
            return 2
        result = {"model": str(folder), **evaluate(model, items)}
        results.append(result)
        print(f"{folder}: WER {100 * result['wer']:.1f} % on {result['utterances']} utterances; "
              f"e.g. {result['examples'][0]['hyp']!r} for {result['examples'][0]['ref']!r}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
