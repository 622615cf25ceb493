"""Whole-sentence TTS with and without a voice prompt: what a prompt from another recording costs the words.

    python -m eval.tts_prompt_probe --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        --model outputs/demo/unified/final [--split seen] [--limit 16] [--prompts other,none] [--temperature T]
        [--out outputs/tts_prompt_probe.json]

For each held-out utterance the model speaks its whole text, once per prompt mode: `other`, prompted by the next
utterance of the same voice with its transcript (eval.report's pairing, eval/report.py pair_prompts), and `none`, with
no prompt at all (the opening a single training utterance starts from). The same items, seeds and judge
(Whisper-base) in both modes, so the difference is what the prompt's sentence boundary and two-sentence text cost
(docs/learning.md section 26). Next to eval.tts_self_continuation (the true opening of the same utterance given).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .asr_wer import score
from .report import SPLITS, add_corpus_arguments, open_judge_and_model, pair_prompts, spread_over_voices, write_json

MODES = ("other", "none")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser)
    parser.add_argument("--split", choices=sorted(SPLITS), default="seen")
    parser.add_argument("--limit", type=int, default=16, help="utterances, spread over the split's voices")
    parser.add_argument("--prompts", default="other,none", help=f"comma-separated prompt modes out of {MODES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="noise scale (default: the checkpoint's)")
    parser.add_argument("--out", default="outputs/tts_prompt_probe.json", help="the results as JSON")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.prompts.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        parser.error(f"--prompts must name modes out of {MODES}, got {args.prompts!r}")

    from data_prep.manifest import read_manifest
    from holitok.audio import load_audio

    judge, pipeline = open_judge_and_model(parser, args)
    sr = pipeline.codec.sample_rate
    records = read_manifest(Path(args.corpus) / SPLITS[args.split])
    prompt_of = {item.id: prompt for item, prompt in pair_prompts(records)}
    chosen = spread_over_voices(records, args.limit)
    options = {} if args.temperature is None else {"temperature": args.temperature}
    seconds = {r.id: len(load_audio(r.audio, target_sample_rate=sr)) / sr for r in chosen}  # the truth's lengths, once
    report = {"model": args.model, "split": args.split, "utterances": len(chosen), "judge": judge.name,
              "temperature": args.temperature, "modes": {}}
    for mode in modes:
        refs, hyps, items = [], [], []
        for index, record in enumerate(chosen):
            prompt = prompt_of[record.id] if mode == "other" else None
            prompt_audio = load_audio(prompt.audio, target_sample_rate=sr) if prompt else None
            with torch.no_grad():
                (wav, result), = pipeline.synthesize([record.text], [prompt_audio], [prompt.text if prompt else None],
                                                     sample_rate=sr, seed=args.seed + index, **options)
            wav = wav.numpy()
            refs.append(record.text)
            hyps.append(judge.transcribe(wav, sr) if len(wav) else "")
            items.append({"id": record.id, "prompt_id": prompt.id if prompt else None, "text": record.text,
                          "tts": hyps[-1], "duration_ratio": len(wav) / sr / seconds[record.id],
                          "stopped_by_eos": bool(result.stopped_by_eos)})
            print(f"[{mode}] {record.id}: {record.text!r} -> {hyps[-1]!r}", flush=True)
        report["modes"][mode] = {
            "wer": score(refs, hyps).corpus_wer,
            "duration_ratio": sum(i["duration_ratio"] for i in items) / max(len(items), 1),
            "eos_rate": sum(i["stopped_by_eos"] for i in items) / max(len(items), 1), "items": items}
        print(f"prompt {mode}: WER {report['modes'][mode]['wer']:.1%}, duration / the truth's "
              f"{report['modes'][mode]['duration_ratio']:.2f}", flush=True)
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
