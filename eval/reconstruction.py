"""Tokenizer resynthesis quality on a manifest: encode -> decode every utterance, score PESQ NB/WB, STOI, mel distance.

    python -m eval.reconstruction --manifest data/synth/test_seen_voice.jsonl --tokenizer outputs/demo/tokenizer \
        [--limit 50] [--mode mean|sample] [--save_audio DIR] [--json results.json]

`--tokenizer` takes anything `HoliTok.from_pretrained` takes (our directory, an authors' model.pt, a preset name).
Reconstruction uses the posterior mean (the deterministic path) unless `--mode sample`. Utterances that cannot be
read or scored are listed with the reason, never dropped silently; the means are over the scored utterances.
PESQ/STOI need the `eval` extra; without it those columns are reported as unavailable and the mel distance is kept.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from holitok.audio import AudioError, load_audio, save_audio

from .audio_metrics import MissingJudgeError, mel_distance, pesq_score, stoi_score

METRICS = ("pesq_wb", "pesq_nb", "stoi", "mel_distance")


def score_pair(reference: torch.Tensor, degraded: torch.Tensor, sample_rate: int) -> tuple[dict, dict]:
    """(scores, problems): every metric that could be computed, and a reason for each that could not."""
    scores, problems = {}, {}
    computations = {
        "pesq_wb": lambda: pesq_score(reference, degraded, sample_rate, "wb"),
        "pesq_nb": lambda: pesq_score(reference, degraded, sample_rate, "nb"),
        "stoi": lambda: stoi_score(reference, degraded, sample_rate),
        "mel_distance": lambda: mel_distance(reference, degraded, sample_rate),
    }
    for name, compute in computations.items():
        try:
            scores[name] = compute()
        except (MissingJudgeError, ValueError) as err:
            problems[name] = str(err)
    return scores, problems


@torch.no_grad()
def reconstruct(codec, audio: torch.Tensor, mode: str = "mean", generator: torch.Generator | None = None) -> torch.Tensor:
    """[L] at 48 kHz -> resynthesised [L] (decoder output cut to the input length)."""
    latents = codec.encode(audio[None, None], sample=(mode == "sample"), generator=generator)
    return codec.decode(latents)[0, 0, : audio.shape[-1]]


def evaluate_manifest(manifest: str | Path, codec, limit: int | None = None, mode: str = "mean",
                      save_audio_dir: str | Path | None = None, seed: int = 0, progress: bool = True) -> dict:
    from data_prep.manifest import read_manifest

    records = read_manifest(manifest)[:limit]
    if not records:
        raise ValueError(f"{manifest} lists no utterances")
    generator = torch.Generator().manual_seed(seed)
    rows, failed = [], []
    for record in tqdm(records, desc="resynthesis", disable=not progress, unit="utt"):
        try:
            audio = load_audio(record.audio)
        except AudioError as err:
            failed.append({"id": record.id, "reason": str(err)})
            continue
        resynth = reconstruct(codec, audio, mode, generator)
        if save_audio_dir is not None:
            save_audio(Path(save_audio_dir) / f"{record.id}.wav", resynth, codec.sample_rate)
        scores, problems = score_pair(audio, resynth, codec.sample_rate)
        rows.append({"id": record.id, "seconds": audio.shape[-1] / codec.sample_rate, **scores,
                     **({"unavailable": problems} if problems else {})})
    means = {}
    for name in METRICS:
        values = [row[name] for row in rows if name in row]
        means[name] = sum(values) / len(values) if values else None
        means[f"{name}_count"] = len(values)
    return {"manifest": str(manifest), "mode": mode, "num_utterances": len(records), "scored": len(rows),
            "failed": failed, "mean": means, "utterances": rows}


def format_summary(report: dict) -> str:
    parts = []
    for name in METRICS:
        value = report["mean"][name]
        parts.append(f"{name} {'n/a' if value is None or math.isnan(value) else f'{value:.3f}'}")
    lines = [f"{report['scored']}/{report['num_utterances']} utterances scored ({report['mode']}): " + ", ".join(parts)]
    unavailable = {k for row in report["utterances"] for k in row.get("unavailable", {})}
    for name in sorted(unavailable):
        reason = next(row["unavailable"][name] for row in report["utterances"] if name in row.get("unavailable", {}))
        lines.append(f"  {name} unavailable for some utterances: {reason}")
    for item in report["failed"]:
        lines.append(f"  failed {item['id']}: {item['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--tokenizer", required=True, help="HoliTok dir, model.pt or preset name")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--mode", choices=("mean", "sample"), default="mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save_audio")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    from holitok import HoliTok

    codec = HoliTok.from_pretrained(args.tokenizer, device="cpu").eval()
    report = evaluate_manifest(args.manifest, codec, args.limit, args.mode, args.save_audio, args.seed)
    print(format_summary(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
