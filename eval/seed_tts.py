"""Seed-TTS-Eval protocol on a `meta.lst`: clone each target with its prompt, then WER (ASR judge) and SIM (speaker judge).

    python -m eval.seed_tts --meta data/synth/seed_tts_eval/meta.lst --model outputs/demo/unified/final \
        --tokenizer outputs/demo/tokenizer --out outputs/eval/seed_tts \
        [--asr_judge self|whisper:DIR|none] [--sim_judge resemblyzer|melstats|none] [--seeds 0 1 2] [--limit N]
    python -m eval.seed_tts --meta ... --generated DIR --asr_judge whisper:DIR   # score existing <utt>.wav files

Protocol (as Seed-TTS-Eval's official scripts do it; docs/eval.md): `meta.lst` lines are
`utt|prompt_text|prompt_wav|target_text[|gt_wav]`; the model gets the prompt audio + its transcript and speaks the
target text; WER = **mean of per-utterance WERs** after the eval.asr_wer normaliser (lower-case, punctuation except
the apostrophe removed, no number normalisation; per character for zh); SIM = cosine between the speaker embeddings
of the generated audio and of the **prompt** wav. Differences from the official scripts, on purpose: a generated
file that is missing is reported (the official scripts skip it silently), and the judges are offline models of our
choice (see eval/judges.py), so absolute numbers are comparable across our runs, not to published tables unless the
same judges are used. Seeds: report mean ± std over several (`--seeds 0 1 2`), as the anchors advise.
Generation is resumable: existing `<out>/seed-<s>/wavs/<utt>.wav` files are kept.
"""
from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from holitok.audio import AudioError, read_audio, save_audio

from .asr_wer import score_utterance
from .audio_metrics import MissingJudgeError, cosine_similarity
from .judges import make_asr_judge, make_speaker_judge


@dataclass
class EvalItem:
    utt: str
    prompt_text: str
    prompt_wav: str
    target_text: str


def read_meta(meta: str | Path) -> tuple[list[EvalItem], list[tuple[str, str]]]:
    """(items, problems): lines that cannot be used are returned with the reason, never dropped silently."""
    from data_prep.corpora import seed_tts_eval

    records, skipped = seed_tts_eval(meta)
    items = [EvalItem(r.id, r.prompt_text or "", r.prompt_audio, r.text) for r in records]
    return items, list(skipped)


def generate(items: list[EvalItem], pipeline, out_dir: Path, seed: int, options: dict, progress: bool = True) -> list[dict]:
    """Writes `<out_dir>/<utt>.wav` for every item not already there; returns the items that failed, with reasons."""
    failures = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in tqdm(items, desc=f"generating (seed {seed})", disable=not progress, unit="utt"):
        path = out_dir / f"{item.utt}.wav"
        if path.exists():
            continue
        try:
            wav = pipeline.tts(item.target_text, prompt_audio=item.prompt_wav, prompt_text=item.prompt_text,
                               seed=seed, **options)
        except (AudioError, ValueError) as err:
            failures.append({"utt": item.utt, "reason": f"generation failed: {err}"})
            continue
        if wav.numel() == 0:
            failures.append({"utt": item.utt, "reason": "the model generated no audio"})
            continue
        tmp = path.with_suffix(".partial.wav")
        save_audio(tmp, wav, pipeline.sample_rate)
        tmp.replace(path)  # an interrupted run never leaves a truncated file under the final name
    return failures


def score_generated(items: list[EvalItem], generated_dir: Path, asr_judge, speaker_judge, language: str = "en",
                    progress: bool = True) -> dict:
    """Per-utterance WER and SIM for the wavs in `generated_dir`, plus the protocol aggregates."""
    rows, missing = [], []
    prompt_embeddings: dict[str, np.ndarray] = {}
    for item in tqdm(items, desc="scoring", disable=not progress, unit="utt"):
        path = generated_dir / f"{item.utt}.wav"
        if not path.exists():
            missing.append(item.utt)
            continue
        audio, rate = read_audio(path)
        audio = audio if audio.ndim == 1 else audio.mean(axis=0)
        row: dict = {"utt": item.utt, "seconds": len(audio) / rate, "target_text": item.target_text}
        if asr_judge is not None:
            row["hypothesis"] = asr_judge.transcribe(audio, rate)
            scored = score_utterance(item.target_text, row["hypothesis"], language, item.utt)
            row["wer"] = scored.wer
        if speaker_judge is not None:
            if item.prompt_wav not in prompt_embeddings:
                prompt_audio, prompt_rate = read_audio(item.prompt_wav)
                prompt_audio = prompt_audio if prompt_audio.ndim == 1 else prompt_audio.mean(axis=0)
                prompt_embeddings[item.prompt_wav] = speaker_judge.embed(prompt_audio, prompt_rate)
            try:
                row["sim"] = cosine_similarity(speaker_judge.embed(audio, rate), prompt_embeddings[item.prompt_wav])
            except ValueError as err:
                row["sim_error"] = str(err)
        rows.append(row)
    wers = [r["wer"] for r in rows if "wer" in r]
    sims = [r["sim"] for r in rows if "sim" in r]
    return {"wer": statistics.fmean(wers) if wers else None, "sim": statistics.fmean(sims) if sims else None,
            "scored": len(rows), "missing": missing, "utterances": rows}


def mean_std(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def run(items: list[EvalItem], out: Path, asr_judge, speaker_judge, pipeline=None, seeds=(0,),
        generated: Path | None = None, options: dict | None = None, language: str = "en",
        progress: bool = True) -> dict:
    """Generates (unless `generated` is given) and scores every seed; writes `<out>/results.json`."""
    per_seed = {}
    for seed in ([None] if generated is not None else list(seeds)):
        wav_dir = generated if generated is not None else out / f"seed-{seed}" / "wavs"
        failures = [] if generated is not None else generate(items, pipeline, wav_dir, seed, options or {}, progress)
        result = score_generated(items, wav_dir, asr_judge, speaker_judge, language, progress)
        result["generation_failures"] = failures
        per_seed["given" if seed is None else str(seed)] = result
    summary = {
        "num_items": len(items),
        "asr_judge": getattr(asr_judge, "name", None),
        "speaker_judge": getattr(speaker_judge, "name", None),
        "wer": mean_std([r["wer"] for r in per_seed.values() if r["wer"] is not None]),
        "sim": mean_std([r["sim"] for r in per_seed.values() if r["sim"] is not None]),
        "per_seed": per_seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    return summary


def format_summary(summary: dict) -> str:
    def fmt(stat: dict, scale: float, unit: str) -> str:
        if stat["mean"] is None:
            return "not computed"
        return f"{scale * stat['mean']:.2f}{unit} ± {scale * stat['std']:.2f} over {stat['n']} run(s)"

    lines = [f"Seed-TTS-Eval on {summary['num_items']} items",
             f"  WER: {fmt(summary['wer'], 100, '%')}  [judge: {summary['asr_judge'] or 'none'}]",
             f"  SIM: {fmt(summary['sim'], 1, '')}  [judge: {summary['speaker_judge'] or 'none'}]"]
    for seed, result in summary["per_seed"].items():
        if result["missing"]:
            lines.append(f"  seed {seed}: {len(result['missing'])} generated files missing: {result['missing'][:10]}")
        for failure in result["generation_failures"]:
            lines.append(f"  seed {seed}: {failure['utt']}: {failure['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta", required=True, help="Seed-TTS-Eval meta.lst")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", help="UnifiedModel directory (needed to generate, or for --asr_judge self)")
    parser.add_argument("--tokenizer", help="HoliTok directory / model.pt matching the model")
    parser.add_argument("--generated", help="score existing <utt>.wav files instead of generating")
    parser.add_argument("--asr_judge", default="self", help="self | whisper:DIR | none (default: self)")
    parser.add_argument("--sim_judge", default="resemblyzer", help="resemblyzer | melstats | none")
    parser.add_argument("--language", default="en")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg_strength", type=float)
    parser.add_argument("--temperature", type=float)
    args = parser.parse_args(argv)

    items, problems = read_meta(args.meta)
    for utt, reason in problems:
        print(f"skipped {utt}: {reason}")
    items = items[: args.limit]
    if not items:
        parser.error(f"{args.meta} has no usable items")
    pipeline = None
    if args.generated is None or args.asr_judge == "self":
        if not (args.model and args.tokenizer):
            parser.error("--model and --tokenizer are needed to generate (or for --asr_judge self)")
        from holitok_slm.infer.pipeline import SpeechPipeline

        pipeline = SpeechPipeline.from_pretrained(args.model, args.tokenizer)
    try:
        asr_judge = make_asr_judge(args.asr_judge, pipeline, args.language)
    except MissingJudgeError as err:
        parser.error(f"ASR judge unavailable: {err}")
    try:
        speaker_judge = make_speaker_judge(args.sim_judge)
    except MissingJudgeError as err:
        print(f"SIM will NOT be computed: {err}  (or pass --sim_judge none to silence this)")
        speaker_judge = None
    if args.asr_judge == "self":
        print("note: WER judged by the model's own ASR (biased); use --asr_judge whisper:DIR for a fair number")
    options = {k: v for k, v in {"steps": args.steps, "cfg_strength": args.cfg_strength,
                                 "temperature": args.temperature}.items() if v is not None}
    summary = run(items, Path(args.out), asr_judge, speaker_judge, pipeline, args.seeds,
                  Path(args.generated) if args.generated else None, options, args.language)
    print(format_summary(summary))
    print(f"per-utterance results: {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
