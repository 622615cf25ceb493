"""Seed-TTS-Eval protocol on a `meta.lst`: clone each target with its prompt, then WER (ASR judge) and SIM (speaker judge).

    python -m eval.seed_tts --meta data/synth/seed_tts_eval/meta.lst --model outputs/demo/unified/final \
        --tokenizer outputs/demo/tokenizer --out outputs/eval/seed_tts \
        [--asr_judge self|whisper:DIR|whisper-hf:DIR|paraformer:DIR|none]
        [--sim_judge resemblyzer|melstats|wavlm-ecapa:CKPT[,WAVLM_DIR]|none] [--normaliser default|seed-tts]
        [--seeds 0 1 2] [--limit N]
    python -m eval.seed_tts --meta ... --generated DIR --asr_judge whisper-hf:DIR   # score existing <utt>.wav files

Protocol (as Seed-TTS-Eval's official scripts do it; docs/eval.md): `meta.lst` lines are
`utt|prompt_text|prompt_wav|target_text[|gt_wav]`; the model gets the prompt audio + its transcript and speaks the
target text; WER = **mean of per-utterance WERs** after the eval.asr_wer normaliser (lower-case, punctuation except
the apostrophe removed, no number normalisation; per character for zh; `--normaliser seed-tts` = the official
script's exactly); SIM = cosine between the speaker embeddings of the generated audio and of the **prompt** wav.
The official judges are named choices: `--asr_judge whisper-hf:DIR` (whisper-large-v3, EN), `paraformer:DIR` (ZH),
`--sim_judge wavlm-ecapa:CKPT` (docs/eval.md says how to get their files). Differences from the official scripts, on
purpose: a generated file that is missing counts as a failure (WER 1, SIM 0; the official scripts skip it silently,
their number is kept as `wer_scored`/`sim_scored`); versions and judge checkpoint sha256 go into the results.
Seeds: report mean ± std over several (`--seeds 0 1 2`), as the anchors advise.
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

from .asr_wer import STYLES, normalize_text, score_utterance
from .audio_metrics import MissingJudgeError, cosine_similarity
from .judges import make_asr_judge, make_speaker_judge, transcribe_many


@dataclass
class EvalItem:
    utt: str
    prompt_text: str
    prompt_wav: str
    target_text: str
    language: str = "en"


def read_meta(meta: str | Path, language: str | None = None) -> tuple[list[EvalItem], list[tuple[str, str]]]:
    """(items, problems): lines that cannot be used are returned with the reason, never dropped silently. The
    language is `language` if given, else zh for lists under a `zh/` folder (the official `zh/meta.lst`,
    `zh/hardcase.lst`), else en."""
    from data_prep.corpora import seed_tts_eval

    records, skipped = seed_tts_eval(meta, language=language)
    items = [EvalItem(r.id, r.prompt_text or "", r.prompt_audio, r.text, r.language) for r in records]
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


def _mono(audio: np.ndarray) -> np.ndarray:
    return audio if audio.ndim == 1 else audio.mean(axis=0)


def score_generated(items: list[EvalItem], generated_dir: Path, asr_judge, speaker_judge, language: str | None = None,
                    progress: bool = True, normaliser: str = "default", batch_size: int = 16) -> dict:
    """Per-utterance WER and SIM for the wavs in `generated_dir`, plus the protocol aggregates.

    `language` overrides the items' own. Aggregates: `wer` = macro mean of per-utterance WERs over **all** items, a
    missing wav (or one whose SIM cannot be computed) counting as a failure: WER 1 (nothing recognised), SIM 0;
    `wer_scored` / `sim_scored` = the same means over the files that exist (what the official scripts report, as they
    skip missing files); `wer_micro` = total edits / total reference tokens (missing = all deletions)."""
    rows, missing = [], []
    prompt_embeddings: dict[str, np.ndarray] = {}
    present = []
    for item in items:
        if (generated_dir / f"{item.utt}.wav").exists():
            present.append(item)
        else:
            missing.append(item.utt)
    bar = tqdm(total=len(present), desc="scoring", disable=not progress, unit="utt")
    for start in range(0, len(present), batch_size):
        chunk = present[start:start + batch_size]
        audios, rates = [], []
        for item in chunk:
            audio, rate = read_audio(generated_dir / f"{item.utt}.wav")
            audios.append(_mono(audio))
            rates.append(rate)
        hypotheses: list[str | None] = [None] * len(chunk)
        if asr_judge is not None:
            for lang in sorted({language or item.language for item in chunk}):  # one batch per forced language
                idx = [i for i, item in enumerate(chunk) if (language or item.language) == lang]
                for i, text in zip(idx, transcribe_many(asr_judge, [audios[i] for i in idx], [rates[i] for i in idx], lang)):
                    hypotheses[i] = text
        for item, audio, rate, hypothesis in zip(chunk, audios, rates, hypotheses):
            lang = language or item.language
            row: dict = {"utt": item.utt, "language": lang, "seconds": len(audio) / rate, "target_text": item.target_text}
            if asr_judge is not None:
                scored = score_utterance(item.target_text, hypothesis, lang, item.utt, style=normaliser)
                row.update(hypothesis=hypothesis, wer=scored.wer, errors=scored.errors,
                           reference_tokens=scored.reference_length)
            if speaker_judge is not None:
                try:
                    if item.prompt_wav not in prompt_embeddings:
                        prompt_audio, prompt_rate = read_audio(item.prompt_wav)
                        prompt_embeddings[item.prompt_wav] = speaker_judge.embed(_mono(prompt_audio), prompt_rate)
                    row["sim"] = cosine_similarity(speaker_judge.embed(audio, rate), prompt_embeddings[item.prompt_wav])
                except ValueError as err:
                    row["sim_error"] = str(err)
            rows.append(row)
            bar.update(1)
    bar.close()
    result = {"scored": len(rows), "missing": missing, "utterances": rows}
    result.update(aggregate(items, rows, asr_judge is not None, speaker_judge is not None, language, normaliser))
    return result


def aggregate(items: list[EvalItem], rows: list[dict], with_wer: bool, with_sim: bool, language: str | None = None,
              normaliser: str = "default") -> dict:
    """Macro and micro means; a missing utterance counts as a failure (see score_generated)."""
    by_utt = {row["utt"]: row for row in rows}
    out: dict = {"wer": None, "wer_scored": None, "wer_micro": None, "sim": None, "sim_scored": None, "failures": []}
    for item in items:
        row = by_utt.get(item.utt)
        if row is None:
            out["failures"].append({"utt": item.utt, "reason": "no generated wav"})
        elif with_sim and "sim" not in row:
            out["failures"].append({"utt": item.utt, "reason": f"no SIM: {row.get('sim_error', '?')}"})
    if with_wer and items:
        wers, errors, tokens = [], 0, 0
        for item in items:
            row = by_utt.get(item.utt)
            if row is None:  # nothing recognised: every reference token deleted
                n = len(normalize_text(item.target_text, language or item.language, style=normaliser).split())
                wers.append(1.0)
                errors, tokens = errors + n, tokens + n
            else:
                wers.append(row["wer"])
                errors, tokens = errors + row["errors"], tokens + row["reference_tokens"]
        out["wer"] = statistics.fmean(wers)
        out["wer_micro"] = errors / tokens if tokens else None
        scored = [row["wer"] for row in rows]
        out["wer_scored"] = statistics.fmean(scored) if scored else None
    if with_sim and items:
        sims = [by_utt[item.utt]["sim"] if item.utt in by_utt and "sim" in by_utt[item.utt] else 0.0 for item in items]
        out["sim"] = statistics.fmean(sims)
        scored = [row["sim"] for row in rows if "sim" in row]
        out["sim_scored"] = statistics.fmean(scored) if scored else None
    return out


def mean_std(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def environment() -> dict:
    """Versions that move the numbers, recorded next to them."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for package in ("torch", "transformers", "jiwer", "numpy", "scipy", "soxr", "funasr", "zhconv",
                    "faster-whisper", "resemblyzer"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def judge_provenance(judge) -> dict | None:
    if judge is None:
        return None
    out = {"name": getattr(judge, "name", type(judge).__name__)}
    if hasattr(judge, "provenance"):
        out.update(judge.provenance())
    return out


def run(items: list[EvalItem], out: Path, asr_judge, speaker_judge, pipeline=None, seeds=(0,),
        generated: Path | None = None, options: dict | None = None, language: str | None = None,
        progress: bool = True, normaliser: str = "default") -> dict:
    """Generates (unless `generated` is given) and scores every seed; writes `<out>/results.json`."""
    per_seed = {}
    for seed in ([None] if generated is not None else list(seeds)):
        wav_dir = generated if generated is not None else out / f"seed-{seed}" / "wavs"
        failures = [] if generated is not None else generate(items, pipeline, wav_dir, seed, options or {}, progress)
        result = score_generated(items, wav_dir, asr_judge, speaker_judge, language, progress, normaliser)
        result["generation_failures"] = failures
        per_seed["given" if seed is None else str(seed)] = result
    summary = {
        "num_items": len(items),
        "asr_judge": getattr(asr_judge, "name", None),
        "speaker_judge": getattr(speaker_judge, "name", None),
        "normaliser": normaliser,
        "missing_policy": "a missing wav counts as WER 1 and SIM 0 in wer/sim; wer_scored/sim_scored skip it "
                          "(the official scripts' behaviour)",
        "wer": mean_std([r["wer"] for r in per_seed.values() if r["wer"] is not None]),
        "wer_scored": mean_std([r["wer_scored"] for r in per_seed.values() if r["wer_scored"] is not None]),
        "wer_micro": mean_std([r["wer_micro"] for r in per_seed.values() if r["wer_micro"] is not None]),
        "sim": mean_std([r["sim"] for r in per_seed.values() if r["sim"] is not None]),
        "sim_scored": mean_std([r["sim_scored"] for r in per_seed.values() if r["sim_scored"] is not None]),
        "environment": environment(),
        "judges": {"asr": judge_provenance(asr_judge), "sim": judge_provenance(speaker_judge)},
        "per_seed": per_seed,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False))
    return summary


def format_summary(summary: dict) -> str:
    def fmt(stat: dict, scale: float, unit: str) -> str:
        if stat["mean"] is None:
            return "not computed"
        return f"{scale * stat['mean']:.2f}{unit} ± {scale * stat['std']:.2f} over {stat['n']} run(s)"

    lines = [f"Seed-TTS-Eval on {summary['num_items']} items (normaliser: {summary.get('normaliser', 'default')})",
             f"  WER: {fmt(summary['wer'], 100, '%')}  [judge: {summary['asr_judge'] or 'none'}]",
             f"  SIM: {fmt(summary['sim'], 1, '')}  [judge: {summary['speaker_judge'] or 'none'}]"]
    if any(r["missing"] for r in summary["per_seed"].values()):
        lines.append(f"  (missing files count as failures above; over the existing files only, as the official scripts "
                     f"report: WER {fmt(summary['wer_scored'], 100, '%')}, SIM {fmt(summary['sim_scored'], 1, '')})")
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
    parser.add_argument("--asr_judge", default="self",
                        help="self | whisper:DIR | whisper-base | whisper-hf:DIR | paraformer:DIR | none (default: self)")
    parser.add_argument("--sim_judge", default="resemblyzer",
                        help="resemblyzer | melstats | wavlm-ecapa:CKPT[,WAVLM_DIR] | none")
    parser.add_argument("--language", help="en | zh; default: zh for lists under a zh/ folder, else en")
    parser.add_argument("--normaliser", choices=STYLES, default="default",
                        help="default: eval.asr_wer's NFKC normaliser; seed-tts: the official run_wer.py one exactly")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--cfg_strength", type=float)
    parser.add_argument("--temperature", type=float)
    args = parser.parse_args(argv)

    items, problems = read_meta(args.meta, args.language)
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
        asr_judge = make_asr_judge(args.asr_judge, pipeline, args.language or items[0].language)
    except MissingJudgeError as err:
        parser.error(f"ASR judge unavailable: {err}")
    try:
        speaker_judge = make_speaker_judge(args.sim_judge)
    except MissingJudgeError as err:
        print(f"SIM will NOT be computed: {err}  (or pass --sim_judge none to silence this)")
        speaker_judge = None
    if args.asr_judge == "self":
        print("note: WER judged by the model's own ASR (biased); use --asr_judge whisper-hf:DIR for a fair number")
    options = {k: v for k, v in {"steps": args.steps, "cfg_strength": args.cfg_strength,
                                 "temperature": args.temperature}.items() if v is not None}
    summary = run(items, Path(args.out), asr_judge, speaker_judge, pipeline, args.seeds,
                  Path(args.generated) if args.generated else None, options, args.language,
                  normaliser=args.normaliser)
    print(format_summary(summary))
    print(f"per-utterance results: {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
