"""WER/CER scoring with jiwer behind one documented text normaliser (the Seed-TTS-Eval conventions).

Normaliser (`normalize_text`), chosen to match how Seed-TTS-Eval numbers are computed:
  * Unicode NFKC, then lower-casing (English);
  * every punctuation/symbol character becomes a space, except the apostrophe inside words ("don't" stays one word;
    `keep_apostrophe=False` drops it too, as F5-TTS's port does);
  * whitespace collapsed; numbers are NOT spelled out (the official scripts do not normalise numbers either);
  * Chinese/Japanese/Korean text is scored per character (`language="zh"`): spaces removed, one token per character.

`style="seed-tts"` is the official Seed-TTS-Eval `run_wer.py` normaliser, character for character: every character of
`SEED_TTS_PUNCTUATION` (zhon's Chinese punctuation + Python's `string.punctuation`) except the ASCII apostrophe is
deleted (not replaced by a space: "well-known" -> "wellknown"), no NFKC, English lower-cased, zh split per character
(not lower-cased), numbers untouched. `eval/seed_tts.py --normaliser seed-tts` uses it to reproduce published numbers.

Two aggregates are reported because papers use both: `macro_wer` = mean of per-utterance WERs (the Seed-TTS-Eval
number) and `corpus_wer` = total edits / total reference words (LibriSpeech-style ASR number).

    python -m eval.asr_wer --ref refs.txt --hyp hyps.txt [--language en|zh] [--json out.json]
      (files of `utt_id<TAB>text` or `utt_id|text` lines; ids are matched, a missing hypothesis counts as empty)

    python -m eval.asr_wer --manifest test_other.jsonl --model DIR --tokenizer DIR --benchmark librispeech \
        [--batch_size 16] [--limit N] [--json out.json] [--hyp_out hyps.txt]
      (the unified model's own ASR, paper Table 3: LibriSpeech test-clean/test-other and AISHELL-1 test manifests from
      `python -m data_prep.build_manifest librispeech|aishell1 ...`; batched greedy decoding, longest first)

Benchmark conventions (`BENCHMARKS`): `librispeech` is WER over words with this module's default normaliser (the
transcripts are upper case without punctuation except apostrophes, so lower-casing them is all it changes);
`aishell1` is CER over characters (`language="zh"`: spaces and punctuation removed, one token per character), the
number AISHELL-1 results are quoted in. Both report the corpus rate (total edits / total reference tokens) with S/D/I
counts; an utterance whose audio cannot be read is listed and scored as an empty hypothesis, never dropped.
"""
from __future__ import annotations

import argparse
import json
import re
import string
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import jiwer

CJK_LANGUAGES = {"zh", "ja", "ko", "yue"}
STYLES = ("default", "seed-tts")

# `zhon.hanzi.punctuation` (zhon 2.x, imported by the official run_wer.py), written out by code point so that zhon
# is not a dependency: fullwidth ASCII variants, halfwidth CJK marks, CJK symbols and brackets, dashes, curly quotes,
# ellipsis, small forms, the middle dot, then the four stops. Note what it lacks: the fullwidth full stop U+FF0E.
ZHON_PUNCTUATION = "".join(chr(c) for c in (
    *range(0xFF02, 0xFF0E), 0xFF0F, 0xFF1A, 0xFF1B, 0xFF1C, 0xFF1D, 0xFF1E, 0xFF20, *range(0xFF3B, 0xFF41),
    *range(0xFF5B, 0xFF61), 0xFF62, 0xFF63, 0xFF64, 0x3000, 0x3001, 0x3003, *range(0x3008, 0x3012),
    *range(0x3014, 0x3020), 0x3030, 0x303E, 0x303F, 0x2013, 0x2014, 0x2018, 0x2019, 0x201B, 0x201C, 0x201D, 0x201E,
    0x201F, 0x2026, 0x2027, 0xFE4F, 0xFE51, 0xFE54, 0x00B7, 0xFF01, 0xFF1F, 0xFF61, 0x3002))
SEED_TTS_PUNCTUATION = ZHON_PUNCTUATION + string.punctuation
_SEED_TTS_DELETE = str.maketrans("", "", SEED_TTS_PUNCTUATION.replace("'", ""))


def _seed_tts_normalise(text: str, language: str) -> str:
    """Official run_wer.py `process_one`: delete punctuation (not the ASCII apostrophe), zh per char, en lower."""
    text = text.translate(_SEED_TTS_DELETE)
    if language in CJK_LANGUAGES:
        return " ".join(ch for ch in text if not ch.isspace())
    return " ".join(text.lower().split())


def normalize_text(text: str, language: str = "en", keep_apostrophe: bool = True, style: str = "default") -> str:
    """The scoring normaliser described in the module docstring; returns space-separated tokens."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if style not in STYLES:
        raise ValueError(f"unknown normaliser style {style!r}: use one of {STYLES}")
    if style == "seed-tts":
        return _seed_tts_normalise(text, language)
    text = unicodedata.normalize("NFKC", text).lower()
    chars = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch == "'" and keep_apostrophe:
            chars.append(ch)
        elif category[0] in "PS":  # punctuation and symbols
            chars.append(" ")
        else:
            chars.append(ch)
    text = "".join(chars)
    if keep_apostrophe:
        # An apostrophe only belongs to a word when it sits between letters (quotes 'like this' are dropped).
        text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    if language in CJK_LANGUAGES:
        return " ".join(ch for ch in text if not ch.isspace())
    return " ".join(text.split())


@dataclass
class UtteranceScore:
    id: str
    reference: str          # normalised
    hypothesis: str         # normalised
    errors: int             # substitutions + deletions + insertions
    reference_length: int   # words (or characters for CJK)
    substitutions: int
    deletions: int
    insertions: int

    @property
    def wer(self) -> float:
        return self.errors / self.reference_length


@dataclass
class ErrorRateReport:
    language: str
    unit: str                       # "word" or "char"
    num_utterances: int
    macro_wer: float                # mean of per-utterance error rates (Seed-TTS-Eval)
    corpus_wer: float               # total errors / total reference tokens
    substitutions: int
    deletions: int
    insertions: int
    reference_tokens: int
    utterances: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def score_utterance(reference: str, hypothesis: str, language: str = "en", utt_id: str = "",
                    keep_apostrophe: bool = True, style: str = "default") -> UtteranceScore:
    """Edit operations between the normalised strings. An empty normalised reference cannot be scored."""
    ref = normalize_text(reference, language, keep_apostrophe, style)
    hyp = normalize_text(hypothesis, language, keep_apostrophe, style)
    if not ref:
        raise ValueError(f"utterance {utt_id or '?'}: the reference {reference!r} is empty after normalisation")
    if not hyp:  # jiwer refuses empty hypotheses; everything was deleted
        n = len(ref.split())
        return UtteranceScore(utt_id, ref, hyp, n, n, 0, n, 0)
    out = jiwer.process_words(ref, hyp)
    return UtteranceScore(utt_id, ref, hyp, out.substitutions + out.deletions + out.insertions,
                          out.hits + out.substitutions + out.deletions, out.substitutions, out.deletions,
                          out.insertions)


def score(references: Sequence[str], hypotheses: Sequence[str], language: str = "en",
          ids: Sequence[str] | None = None, keep_apostrophe: bool = True, style: str = "default") -> ErrorRateReport:
    """Scores aligned lists of references and hypotheses (same length)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("nothing to score: no utterances")
    ids = list(ids) if ids is not None else [str(i) for i in range(len(references))]
    scores = [score_utterance(r, h, language, i, keep_apostrophe, style)
              for r, h, i in zip(references, hypotheses, ids)]
    total_ref = sum(s.reference_length for s in scores)
    return ErrorRateReport(
        language=language, unit="char" if language in CJK_LANGUAGES else "word", num_utterances=len(scores),
        macro_wer=sum(s.wer for s in scores) / len(scores), corpus_wer=sum(s.errors for s in scores) / total_ref,
        substitutions=sum(s.substitutions for s in scores), deletions=sum(s.deletions for s in scores),
        insertions=sum(s.insertions for s in scores), reference_tokens=total_ref,
        utterances=[{**asdict(s), "wer": s.wer} for s in scores])


def missed_by_position(references: Sequence[str], hypotheses: Sequence[str], parts: int = 3,
                       language: str = "en") -> list[float | None]:
    """Share of reference words NOT heard (substituted or deleted) in each of `parts` equal stretches of the sentence,
    pooled over utterances: where in a sentence the errors are (a model that knows frequent sentence endings but not
    the words before them misses more at the start than the ground truth does; docs/learning.md section 27)."""
    missed, total = [0] * parts, [0] * parts
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref = normalize_text(reference, language).split()
        hyp = normalize_text(hypothesis or "", language).split()
        heard = [False] * len(ref)
        if ref and hyp:
            for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
                if chunk.type == "equal":
                    heard[chunk.ref_start_idx:chunk.ref_end_idx] = [True] * (chunk.ref_end_idx - chunk.ref_start_idx)
        for i, ok in enumerate(heard):
            part = i * parts // len(ref)
            total[part] += 1
            missed[part] += not ok
    return [m / t if t else None for m, t in zip(missed, total)]


def wer(reference: str, hypothesis: str, language: str = "en") -> float:
    """Word error rate of one utterance after normalisation (character error rate for CJK languages)."""
    return score_utterance(reference, hypothesis, language).wer


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate after normalisation, spaces ignored (any language)."""
    return score_utterance(reference, hypothesis, "zh").wer


def read_transcripts(path: str | Path) -> dict[str, str]:
    """`id<TAB>text` or `id|text` lines -> {id: text}; duplicate ids are an error."""
    out: dict[str, str] = {}
    for line_no, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        sep = "\t" if "\t" in line else "|"
        if sep not in line:
            raise ValueError(f"{path}:{line_no}: expected 'id<TAB>text' or 'id|text', got {line!r}")
        utt, text = line.split(sep, 1)
        if utt in out:
            raise ValueError(f"{path}:{line_no}: duplicate id {utt!r}")
        out[utt] = text
    return out


BENCHMARKS = {"librispeech": {"language": "en", "unit": "WER"}, "aishell1": {"language": "zh", "unit": "CER"}}


def transcribe_manifest(pipeline, manifest: str | Path, batch_size: int = 16, limit: int | None = None,
                        progress: bool = True, beam_size: int | None = None,
                        ctc_weight: float | None = None) -> tuple[list, dict[str, str], list[dict]]:
    """(records, {id: hypothesis}, failures): the model's ASR of every item (its checkpoint's search unless
    `beam_size` / `ctc_weight` are given: holitok_slm/infer/asr.py), batched longest first so a batch pads little;
    an item whose audio fails is a failure with its reason and an empty hypothesis."""
    from tqdm.auto import tqdm

    from data_prep.manifest import read_manifest
    from holitok.audio import AudioError

    from holitok_slm.infer.asr import resolve_search

    beam_size, ctc_weight = resolve_search(pipeline.model, beam_size, ctc_weight)  # bad settings: refused up front
    records = read_manifest(manifest)[:limit]
    if not records:
        raise ValueError(f"{manifest} lists no utterances")
    order = sorted(records, key=lambda r: -(r.duration or 0.0))
    hyps, failures = {}, []
    bar = tqdm(total=len(order), desc="asr", unit="utt", disable=not progress)
    for start in range(0, len(order), batch_size):
        batch = order[start: start + batch_size]
        try:
            texts = pipeline.asr([r.audio for r in batch], beam_size=beam_size, ctc_weight=ctc_weight)
        except (AudioError, ValueError):
            texts = []
            for record in batch:  # find the bad ones; the rest still count
                try:
                    texts.append(pipeline.asr(record.audio, beam_size=beam_size, ctc_weight=ctc_weight))
                except (AudioError, ValueError) as err:
                    failures.append({"id": record.id, "reason": str(err)})
                    texts.append("")
        hyps.update({r.id: t for r, t in zip(batch, texts)})
        bar.update(len(batch))
    bar.close()
    return records, hyps, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", help="reference transcripts (with --hyp)")
    parser.add_argument("--hyp", help="hypothesis transcripts (with --ref)")
    parser.add_argument("--manifest", help="score the unified model's ASR on this manifest (with --model/--tokenizer)")
    parser.add_argument("--model", help="unified model folder")
    parser.add_argument("--tokenizer", help="HoliTok folder the model was trained with")
    parser.add_argument("--benchmark", choices=sorted(BENCHMARKS), help="sets the language/unit conventions")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--beam_size", type=int, help="beams (1 = greedy; default: the checkpoint's search)")
    parser.add_argument("--ctc_weight", type=float, help="weight 0-1 of the model's CTC prefix score in the search")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--hyp_out", help="--manifest: also write the hypotheses as `id<TAB>text` lines")
    parser.add_argument("--language", default="en")
    parser.add_argument("--strip_apostrophe", action="store_true", help="F5-TTS convention")
    parser.add_argument("--style", choices=STYLES, default="default",
                        help="seed-tts: the official run_wer.py normaliser exactly (see the module docstring)")
    parser.add_argument("--json", help="write the full report (per-utterance scores) here")
    args = parser.parse_args(argv)
    if args.manifest:
        if not (args.model and args.tokenizer) or args.ref or args.hyp:
            parser.error("--manifest needs --model and --tokenizer (and no --ref/--hyp)")
        from holitok_slm.infer.inputs import InputError
        from holitok_slm.infer.pipeline import SpeechPipeline

        language = BENCHMARKS[args.benchmark]["language"] if args.benchmark else args.language
        pipeline = SpeechPipeline.from_pretrained(args.model, args.tokenizer)
        try:
            records, hyp_by_id, failures = transcribe_manifest(pipeline, args.manifest, args.batch_size, args.limit,
                                                               beam_size=args.beam_size, ctc_weight=args.ctc_weight)
        except InputError as err:
            parser.error(str(err))
        for failure in failures:
            print(f"unreadable, scored as empty: {failure['id']}: {failure['reason']}")
        refs = {r.id: r.text for r in records}
        hyps = hyp_by_id
        if args.hyp_out:
            Path(args.hyp_out).write_text("".join(f"{i}\t{hyps[i]}\n" for i in sorted(hyps)), encoding="utf-8")
        args.language = language
    elif args.ref and args.hyp:
        refs, hyps = read_transcripts(args.ref), read_transcripts(args.hyp)
    else:
        parser.error("give --ref and --hyp, or --manifest with --model and --tokenizer")
    missing = sorted(set(refs) - set(hyps))
    extra = sorted(set(hyps) - set(refs))
    if missing:
        print(f"{len(missing)} utterances have no hypothesis (scored as empty): {missing[:10]}")
    if extra:
        print(f"{len(extra)} hypotheses have no reference (ignored): {extra[:10]}")
    ids = sorted(refs)
    report = score([refs[i] for i in ids], [hyps.get(i, "") for i in ids], args.language, ids,
                   keep_apostrophe=not args.strip_apostrophe, style=args.style)
    name = "CER" if report.unit == "char" else "WER"
    print(f"{report.num_utterances} utterances: {name} {100 * report.macro_wer:.2f}% (mean per utterance), "
          f"{100 * report.corpus_wer:.2f}% (corpus); S={report.substitutions} D={report.deletions} "
          f"I={report.insertions} N={report.reference_tokens}")
    if args.json:
        out = report.to_dict()
        if args.manifest:
            out.update(manifest=str(args.manifest), model=str(args.model), benchmark=args.benchmark,
                       failures=failures)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
