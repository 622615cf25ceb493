"""TTS and ASR on sentences with words the built-in corpus never had: how far a model reads beyond its corpus.

    python -m eval.new_words_probe --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        --model outputs/demo/unified/final [--limit 16] [--min_new_words 3] [--out outputs/new_words_probe.json]

The sentences come from the grammar's large vocabulary (data_prep/sentences.py), each with at least --min_new_words
words outside the base vocabulary every corpus so far was written in. TTS speaks each one prompted by a test
recording of the corpus (its voices in turn, training and held-out); ASR reads each one rendered by a synthesiser
voice (--asr_voices in turn), next to the judge's (Whisper-base) reading of the same recording. Reported: WER and the
share of the new words that come through (docs/learning.md section 27).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from .asr_wer import normalize_text, score
from .report import SPLITS, add_corpus_arguments, open_judge_and_model, write_json


def new_word_sentences(count: int, min_new_words: int, seed: int = 4242, max_words: int = 14) -> list[str]:
    """`count` distinct large-vocabulary sentences of 6..max_words words with >= min_new_words words outside the base
    vocabulary (the same list for the same arguments)."""
    from data_prep.sentences import VOCABULARIES, SentenceGenerator

    base, generator, chosen = VOCABULARIES["base"].words(), SentenceGenerator(seed, "large"), []
    for _ in range(10000 * count):
        if len(chosen) == count:
            return chosen
        text = generator.sentence(max_words)
        if len(text.split()) >= 6 and sum(w not in base for w in normalize_text(text).split()) >= min_new_words:
            chosen.append(text)
    raise ValueError(f"found only {len(chosen)} sentences with {min_new_words} new words; ask for fewer")


def new_word_recall(references: list[str], hypotheses: list[str]) -> float | None:
    """Share of the references' words outside the base vocabulary that the hypotheses contain (as words)."""
    from data_prep.sentences import VOCABULARIES

    base, found, total = VOCABULARIES["base"].words(), 0, 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        heard = set(normalize_text(hypothesis or "").split())
        for word in normalize_text(reference).split():
            if word not in base:
                total += 1
                found += word in heard
    return found / total if total else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser)
    parser.add_argument("--limit", type=int, default=16, help="sentences")
    parser.add_argument("--min_new_words", type=int, default=3)
    parser.add_argument("--asr_voices", default="flite_slt,espeak_gb_m3,flite_awb,espeak_rp_m5",
                        help="data_prep.synth_corpus voices that render the sentences for ASR, in turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/new_words_probe.json", help="the results as JSON")
    args = parser.parse_args(argv)
    from data_prep.synth_corpus import VOICES

    asr_voices = [v.strip() for v in args.asr_voices.split(",") if v.strip()]
    if not asr_voices or set(asr_voices) - set(VOICES):
        parser.error(f"--asr_voices must name voices out of {sorted(VOICES)}, got {args.asr_voices!r}")
    if args.limit < 1 or args.min_new_words < 1:
        parser.error("--limit and --min_new_words must be >= 1")

    from data_prep.manifest import read_manifest
    from data_prep.synth_corpus import render
    from holitok.audio import load_audio

    judge, pipeline = open_judge_and_model(parser, args)
    sr = pipeline.codec.sample_rate
    prompts = {}  # one test recording per corpus voice: training voices first, then the held-out ones
    for split in ("seen", "unseen"):
        for record in read_manifest(Path(args.corpus) / SPLITS[split]):
            prompts.setdefault(record.speaker, record)
    prompts = list(prompts.values())
    sentences = new_word_sentences(args.limit, args.min_new_words)
    tts, asr = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index, text in enumerate(sentences):
            prompt = prompts[index * len(prompts) // args.limit % len(prompts)]  # spread over the voices
            with torch.no_grad():
                (wav, _), = pipeline.synthesize([text], [load_audio(prompt.audio, target_sample_rate=sr)],
                                                [prompt.text], sample_rate=sr, seed=args.seed + index)
            wav = wav.numpy()
            tts.append({"voice": prompt.speaker, "text": text, "hyp": judge.transcribe(wav, sr) if len(wav) else ""})
            voice = asr_voices[index % len(asr_voices)]
            path = Path(tmp) / f"{index}.wav"
            render(VOICES[voice], text, path)
            audio = load_audio(str(path), target_sample_rate=sr)
            asr.append({"voice": voice, "text": text, "gt": judge.transcribe(audio.numpy(), sr),
                        "hyp": pipeline.asr(audio, sample_rate=sr)})
            print(f"{index}: {text!r}\n  TTS ({prompt.speaker}): {tts[-1]['hyp']!r}\n  ASR ({voice}): "
                  f"{asr[-1]['hyp']!r} (judge: {asr[-1]['gt']!r})", flush=True)
    texts = [row["text"] for row in tts]
    summary = {"tts_wer": score(texts, [r["hyp"] for r in tts]).corpus_wer,
               "tts_new_word_recall": new_word_recall(texts, [r["hyp"] for r in tts]),
               "gt_wer": score(texts, [r["gt"] for r in asr]).corpus_wer,
               "gt_new_word_recall": new_word_recall(texts, [r["gt"] for r in asr]),
               "asr_wer": score(texts, [r["hyp"] for r in asr]).corpus_wer,
               "asr_new_word_recall": new_word_recall(texts, [r["hyp"] for r in asr])}
    print(", ".join(f"{k} {v:.1%}" for k, v in summary.items() if v is not None), flush=True)
    write_json(args.out, {"model": args.model, "judge": judge.name, "sentences": len(sentences),
                          "min_new_words": args.min_new_words, **summary, "tts": tts, "asr": asr})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
