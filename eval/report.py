"""Listener-style quality report: a trained tokenizer + unified model scored per voice on the corpus' held-out splits.

    python -m eval.report --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        [--model outputs/demo/unified/final] [--out outputs/demo/report] [--per_voice 8] \
        [--asr_judge whisper-base] [--sim_judge resemblyzer] [--parts resynth,asr,tts] [--seed 0]

Every number comes from judges that are not part of this project (Whisper-base through faster-whisper, resemblyzer
d-vectors; the `judges` extra) and stands next to the same judge's score of the ground-truth recording of the same
item. Splits: `seen` = training voices x held-out sentences (`test_seen_voice.jsonl`), `unseen` = held-out voices
(`test_unseen_voice.jsonl`). Per voice and per split:
  * ground truth: WER of the recording; SIM between two recordings of the voice (the item and its prompt);
  * resynthesis (tokenizer encode -> decode, posterior mean): WER, SIM to the original, PESQ-WB, STOI;
  * ASR of the unified model on the recording: WER;
  * TTS, prompted with ANOTHER utterance of the same voice (its audio and transcript): WER, SIM to the prompt,
    duration ratio to the ground-truth recording of the same sentence, and the share ended by the stop head.
WER is the corpus WER (total edits / total reference words, `eval.asr_wer` normaliser), SIM a cosine.
Writes `report.json` (every utterance, the judges, pass/fail per target), `report.md` (the tables) and
`spectrograms.png` (original | resynthesis | TTS for one item per voice, 0-12 kHz).
`--resynth_f0 tracker` (tokenizers with the harmonic decoder head only) is a diagnostic, not a score of the
tokenizer: the resynthesis' pulse train runs at the original's tracked F0, i.e. what the decoder would render from
latents that carried the pitch exactly (docs/learning.md section 33).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .asr_wer import missed_by_position, score
from .audio_metrics import cosine_similarity, pesq_score, stoi_score
from .judges import make_asr_judge, make_speaker_judge

SPLITS = {"seen": "test_seen_voice.jsonl", "unseen": "test_unseen_voice.jsonl"}
PARTS = ("resynth", "asr", "tts")
RESYNTH_F0 = ("predicted", "tracker")  # what a harmonic decoder head's pulse train runs at in the resynthesis


@dataclass(frozen=True)
class Target:
    """One quality floor: `metric` of `part` on `split` compared to a fixed bound or to the ground truth."""

    split: str
    part: str
    metric: str
    bound: float
    kind: str = "min"          # "min": value >= bound; "max": value <= bound; "gt": value <= scale * gt + bound
    scale: float = 0.0
    window: float = 0.0        # "range": |value - bound| <= window

    def threshold(self, gt_wer: float | None) -> float:
        return self.scale * gt_wer + self.bound if self.kind == "gt" else self.bound

    def passes(self, value: float, gt_wer: float | None) -> bool:
        if self.kind == "min":
            return value >= self.bound
        if self.kind == "max":
            return value <= self.bound
        if self.kind == "range":
            return abs(value - self.bound) <= self.window
        return value <= self.threshold(gt_wer)

    def describe(self, gt_wer: float | None) -> str:
        if self.kind == "min":
            return f">= {self.bound:g}"
        if self.kind == "max":
            return f"<= {self.bound:.0%}"
        if self.kind == "range":
            return f"{self.bound - self.window:g}..{self.bound + self.window:g}"
        return f"<= {self.scale:g} x GT + {self.bound:.0%} = {self.threshold(gt_wer):.1%}"


# The floors of the project's quality issue (docs/demo.md): the shipped model is measured against them.
TARGETS = (
    *(t for split in SPLITS for t in (
        Target(split, "resynth", "wer", 0.05, "gt", 1.5), Target(split, "resynth", "sim", 0.75),
        Target(split, "resynth", "pesq_wb", 1.8), Target(split, "resynth", "stoi", 0.85),
        Target(split, "tts", "eos_rate", 0.95), Target(split, "tts", "duration_ratio", 1.0, "range", window=0.3))),
    Target("seen", "asr", "wer", 0.25, "max"), Target("unseen", "asr", "wer", 0.35, "max"),
    Target("seen", "tts", "wer", 0.05, "gt", 2.0), Target("seen", "tts", "sim", 0.70),
    Target("unseen", "tts", "wer", 0.05, "gt", 2.5), Target("unseen", "tts", "sim", 0.62),
)


def _sim(judge, a: np.ndarray, b: np.ndarray, sample_rate: int) -> float:
    """Cosine of the two speaker embeddings; 0 when the judge finds no voice in one of them (noise is no speaker, and
    leaving it out would flatter the mean)."""
    try:
        return cosine_similarity(judge.embed(a, sample_rate), judge.embed(b, sample_rate))
    except ValueError:
        return 0.0


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def _wer(rows: list[dict], key: str) -> float | None:
    pairs = [(row["text"], row[key]) for row in rows if row.get(key) is not None]
    return score([p[0] for p in pairs], [p[1] for p in pairs]).corpus_wer if pairs else None


def summarise(rows: list[dict]) -> dict:
    """Aggregates of one group of utterance rows (a voice or a whole split)."""
    out = {"utterances": len(rows), "gt": {"wer": _wer(rows, "gt_hyp"), "sim": _mean(r.get("gt_sim") for r in rows)}}
    if any("resynth_hyp" in r for r in rows):
        out["resynth"] = {"wer": _wer(rows, "resynth_hyp"), "sim": _mean(r.get("resynth_sim") for r in rows),
                          "pesq_wb": _mean(r.get("resynth_pesq_wb") for r in rows),
                          "stoi": _mean(r.get("resynth_stoi") for r in rows)}
    if any("asr_hyp" in r for r in rows):
        out["asr"] = {"wer": _wer(rows, "asr_hyp")}
    if any("tts_hyp" in r for r in rows):
        ratios = [r["tts_duration_ratio"] for r in rows if "tts_duration_ratio" in r]
        out["tts"] = {"wer": _wer(rows, "tts_hyp"), "sim": _mean(r.get("tts_sim") for r in rows),
                      "duration_ratio": _mean(ratios),
                      "duration_within_30pct": _mean(float(abs(x - 1) <= 0.3) for x in ratios),
                      "eos_rate": _mean(float(r["tts_eos"]) for r in rows if "tts_eos" in r)}
    # Where in the sentence the words are missed (thirds), for every transcript the rows carry.
    out["missed_by_third"] = {key[:-4]: missed_by_position([r["text"] for r in rows if r.get(key) is not None],
                                                           [r[key] for r in rows if r.get(key) is not None])
                              for key in ("gt_hyp", "resynth_hyp", "asr_hyp", "tts_hyp")
                              if any(r.get(key) is not None for r in rows)}
    return out


def check_targets(splits: dict) -> list[dict]:
    results = []
    for target in TARGETS:
        block = splits.get(target.split, {}).get("all", {})
        value = block.get(target.part, {}).get(target.metric)
        if value is None:
            continue
        gt_wer = block["gt"]["wer"]
        results.append({"split": target.split, "part": target.part, "metric": target.metric, "value": value,
                        "target": target.describe(gt_wer), "pass": bool(target.passes(value, gt_wer))})
    return results


class Reporter:
    """Scores items of one split; heavy objects (codec, pipeline, judges) are built once by the caller."""

    def __init__(self, codec, pipeline, asr_judge, sim_judge, parts: tuple[str, ...], seed: int = 0,
                 tts_options: dict | None = None, resynth_f0: str = "predicted"):
        self.codec, self.pipeline, self.asr, self.sim = codec, pipeline, asr_judge, sim_judge
        self.parts, self.seed = parts, seed
        if resynth_f0 not in RESYNTH_F0:
            raise ValueError(f"resynth_f0 must be one of {RESYNTH_F0}, got {resynth_f0!r}")
        if resynth_f0 == "tracker" and getattr(codec.config, "decoder_head", None) != "harmonic":
            raise ValueError("resynth_f0 'tracker' drives a harmonic head's pulse train; this tokenizer's decoder "
                             f"head is {getattr(codec.config, 'decoder_head', None)!r}")
        self.resynth_f0 = resynth_f0
        self.tts_options = dict(tts_options or {})  # TTSOptions overrides (eval/tts_sweep.py); none: the model's
        self.sample_rate = codec.sample_rate

    @torch.no_grad()
    def score_item(self, record, prompt, index: int) -> tuple[dict, tuple]:
        from holitok.audio import load_audio

        sr = self.sample_rate
        audio = load_audio(record.audio, target_sample_rate=sr)
        prompt_audio = load_audio(prompt.audio, target_sample_rate=sr)
        wav = audio.numpy()
        row = {"id": record.id, "voice": record.speaker, "text": record.text, "prompt_id": prompt.id,
               "seconds": len(wav) / sr, "gt_hyp": self.asr.transcribe(wav, sr)}
        if self.sim is not None:
            row["gt_sim"] = _sim(self.sim, wav, prompt_audio.numpy(), sr)
        resynth = tts = None
        if "resynth" in self.parts:
            latents = self.codec.encode(audio[None, None])
            resynth = self._resynthesise(audio, latents)[0, 0, : len(wav)].numpy()
            row["resynth_hyp"] = self.asr.transcribe(resynth, sr)
            row["resynth_pesq_wb"] = _safe(pesq_score, wav, resynth, sr, "wb")
            row["resynth_stoi"] = _safe(stoi_score, wav, resynth, sr)
            if self.sim is not None:
                row["resynth_sim"] = _sim(self.sim, wav, resynth, sr)
        if "asr" in self.parts:
            row["asr_hyp"] = self.pipeline.asr(audio, sample_rate=sr)
        if "tts" in self.parts:
            (out, result), = self.pipeline.synthesize([record.text], [prompt_audio], [prompt.text], sample_rate=sr,
                                                      seed=self.seed + index, **self.tts_options)
            tts = out.numpy()
            row["tts_seconds"] = len(tts) / sr
            row["tts_duration_ratio"] = row["tts_seconds"] / row["seconds"]
            row["tts_eos"] = bool(result.stopped_by_eos)
            row["tts_hyp"] = self.asr.transcribe(tts, sr) if len(tts) else ""
            if self.sim is not None:
                row["tts_sim"] = _sim(self.sim, tts, prompt_audio.numpy(), sr) if len(tts) else 0.0
        return row, (record.speaker, wav, resynth, tts)

    def _resynthesise(self, audio: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """The tokenizer's decode, or with resynth_f0 'tracker' a diagnostic oracle: one offline pass whose pulse
        train runs at the original's tracked F0 on the frames the tracker calls voiced (the head's own voicing
        and spectrum unchanged), i.e. what the decoder would render from latents that carried the pitch exactly."""
        if self.resynth_f0 == "predicted":
            return self.codec.decode(latents)
        from holitok.pitch_track import yin_track

        head_hop = self.codec.config.istft_hop
        track = yin_track(audio[None], self.codec.sample_rate, head_hop)
        frames = latents.shape[-1] * (self.codec.hop_size // head_hop)
        return self.codec.forward_decode(latents, log2_f0=track.pulse_f0(frames))


def _safe(fn, *args):
    """A metric that cannot be computed on this item (PESQ finds no speech in noise) is recorded as None."""
    try:
        return fn(*args)
    except ValueError:
        return None


def pair_prompts(records: list) -> list[tuple]:
    """(item, prompt) pairs: each item's prompt is the next utterance of the same voice (never itself)."""
    by_voice: dict[str, list] = {}
    for record in records:
        by_voice.setdefault(record.speaker or "?", []).append(record)
    pairs = []
    for voice, items in sorted(by_voice.items()):
        if len(items) < 2:
            raise ValueError(f"voice {voice!r} has {len(items)} utterance(s); a prompt needs another one")
        pairs += [(item, items[(i + 1) % len(items)]) for i, item in enumerate(items)]
    return pairs


def select(records: list, per_voice: int, skip: int = 0) -> list:
    """The first `per_voice` utterances of each voice after its first `skip`, plus one spare per voice to prompt the
    last of them."""
    counts: dict[str, int] = {}
    kept = []
    for record in records:
        voice = record.speaker or "?"
        position = counts.get(voice, 0)
        counts[voice] = position + 1
        if skip <= position < skip + per_voice + 1:
            kept.append(record)
    return kept


def write_json(path: str | Path, data: dict) -> Path:
    """Writes `data` as indented JSON (creating the folder) and says where: every probe command's last step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    print(f"wrote {path}")
    return path


def spread_over_voices(records: list, limit: int) -> list:
    """At most `limit` utterances taken round-robin over the voices (the first of each voice, then the second...)."""
    by_voice: dict[str, list] = {}
    for record in records:
        by_voice.setdefault(record.speaker or "?", []).append(record)
    return [r for group in zip(*by_voice.values()) for r in group][:limit]


def spectrogram_picture(pictures, sample_rate: int, path: Path) -> None:
    """One row per voice: original | resynthesis | TTS log-mel images (0-12 kHz), labelled."""
    from PIL import Image, ImageDraw

    from holitok.train.mel import LogMelSpectrogram
    from holitok.train.tb_logging import colorize

    mel = LogMelSpectrogram(sample_rate, 2048, sample_rate // 100, 96, fmax=12000.0)
    width, height, label = 300, 96, 14
    columns = ("original", "resynthesis", "TTS")
    canvas = Image.new("RGB", (len(columns) * width + 120, label + len(pictures) * (height + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((120 + c * width + 4, 1), name, fill=(0, 0, 0))
    for r, (voice, *signals) in enumerate(pictures):
        top = label + r * (height + 4)
        draw.text((2, top + height // 2 - 6), str(voice)[:18], fill=(0, 0, 0))
        reference = None
        for c, signal in enumerate(signals):
            if signal is None or len(signal) < 2048:
                continue
            with torch.no_grad():
                image = mel(torch.from_numpy(np.ascontiguousarray(signal))[None])[0].numpy()[::-1]
            reference = image.max() if reference is None else reference
            rgb = Image.fromarray(colorize(image, reference - 5.0, reference)).resize((width - 4, height))
            canvas.paste(rgb, (120 + c * width, top))
    canvas.save(path)


def format_markdown(report: dict) -> str:
    def fmt(value, pct=False):
        if value is None:
            return "-"
        return f"{value:.1%}" if pct else f"{value:.3f}"

    lines = [f"# Quality report: {report['tokenizer']} + {report.get('model') or '(no unified model)'}", "",
             f"Judges: ASR {report['judges']['asr']}; SIM {report['judges']['sim']}. "
             f"{report['per_voice']} utterances per training voice, "
             f"{report.get('per_unseen_voice') or report['per_voice']} per held-out voice; "
             "WER = total edits / total words.", ""]
    header = ("| split | voice | n | GT WER | GT SIM | resynth WER | resynth SIM | PESQ-WB | STOI | ASR WER | "
              "TTS WER | TTS SIM | dur. ratio | EOS |")
    for split, block in report["splits"].items():
        lines += [header, "|" + "---|" * 14]
        for voice, s in [*block["voices"].items(), ("**all**", block["all"])]:
            rs, asr, tts = s.get("resynth", {}), s.get("asr", {}), s.get("tts", {})
            lines.append(f"| {split} | {voice} | {s['utterances']} | {fmt(s['gt']['wer'], 1)} | {fmt(s['gt']['sim'])} | "
                         f"{fmt(rs.get('wer'), 1)} | {fmt(rs.get('sim'))} | {fmt(rs.get('pesq_wb'))} | "
                         f"{fmt(rs.get('stoi'))} | {fmt(asr.get('wer'), 1)} | {fmt(tts.get('wer'), 1)} | "
                         f"{fmt(tts.get('sim'))} | {fmt(tts.get('duration_ratio'))} | {fmt(tts.get('eos_rate'), 1)} |")
        lines.append("")
    lines += ["Words missed by position in the sentence (first / middle / last third), all voices of a split:", "",
              "| split | GT | resynth | ASR | TTS |", "|---|---|---|---|---|"]
    for split, block in report["splits"].items():
        thirds = block["all"].get("missed_by_third", {})
        cells = [" / ".join(fmt(v, 1) for v in thirds[k]) if k in thirds else "-"
                 for k in ("gt", "resynth", "asr", "tts")]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    lines += ["", "| split | part | metric | value | target | pass |", "|---|---|---|---|---|---|"]
    for t in report["targets"]:
        pct = t["metric"] in ("wer", "eos_rate")
        lines.append(f"| {t['split']} | {t['part']} | {t['metric']} | {fmt(t['value'], pct)} | {t['target']} | "
                     f"{'yes' if t['pass'] else '**no**'} |")
    passed = sum(t["pass"] for t in report["targets"])
    lines += ["", f"{passed}/{len(report['targets'])} targets met. Spectrograms: `spectrograms.png`."]
    return "\n".join(lines) + "\n"


def add_corpus_arguments(parser: argparse.ArgumentParser, model_required: bool = True) -> None:
    """--corpus, --tokenizer, --model, --asr_judge: what every listener command here reads (report, sweep, probe)."""
    parser.add_argument("--corpus", required=True, help="a data_prep.synth_corpus folder")
    parser.add_argument("--tokenizer", required=True, help="HoliTok dir, model.pt or preset name")
    parser.add_argument("--model", required=model_required,
                        help="unified model folder" + ("" if model_required else " (needed for the asr and tts parts)"))
    parser.add_argument("--asr_judge", default="whisper-base", help="whisper-base | whisper:DIR (see eval/judges.py)")


def open_judge_and_model(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """A probe command's ASR judge (or exit 2 saying what to install) and its SpeechPipeline (model + tokenizer),
    the model in evaluation mode: the shared opening of eval.tts_teacher_forced and eval.tts_self_continuation."""
    from holitok_slm.infer.pipeline import SpeechPipeline

    from .audio_metrics import MissingJudgeError
    from .judges import make_asr_judge

    try:
        judge = make_asr_judge(args.asr_judge)
    except MissingJudgeError as err:
        parser.exit(2, f"{parser.prog}: {err}\n")
    pipeline = SpeechPipeline.from_pretrained(args.model, args.tokenizer)
    pipeline.model.eval()
    return judge, pipeline


def build_report(corpus: str | Path, codec, pipeline, asr_judge, sim_judge, parts=PARTS, per_voice: int = 8,
                 seed: int = 0, progress: bool = True, per_unseen_voice: int | None = None,
                 splits: tuple[str, ...] = tuple(SPLITS), tts_options: dict | None = None,
                 skip: dict[str, int] | None = None, resynth_f0: str = "predicted") -> tuple[dict, list]:
    """`per_voice` utterances of each training voice, `per_unseen_voice` (default: the same) of each held-out voice;
    `skip` ({split: n}) passes over each voice's first n utterances of that split."""
    from data_prep.manifest import read_manifest

    corpus = Path(corpus)
    reporter = Reporter(codec, pipeline, asr_judge, sim_judge, tuple(parts), seed, tts_options, resynth_f0)
    chosen, splits, pictures = splits, {}, []
    for split, name in SPLITS.items():
        if split not in chosen:
            continue
        count = per_unseen_voice if split == "unseen" and per_unseen_voice is not None else per_voice
        path = corpus / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: --corpus must be a data_prep.synth_corpus folder "
                                    f"(with {', '.join(SPLITS.values())})")
        pairs = pair_prompts(select(read_manifest(path), count, (skip or {}).get(split, 0)))
        taken: dict[str, int] = {}
        rows = []
        for index, (record, prompt) in enumerate(tqdm(pairs, desc=f"report {split}", disable=not progress)):
            voice = record.speaker or "?"
            if taken.get(voice, 0) >= count:
                continue  # the spare that only served as a prompt
            taken[voice] = taken.get(voice, 0) + 1
            row, picture = reporter.score_item(record, prompt, index)
            rows.append(row)
            if taken[voice] == 1:
                pictures.append((f"{split}: {voice}", *picture[1:]))
        voices = sorted({r["voice"] for r in rows})
        splits[split] = {"voices": {v: summarise([r for r in rows if r["voice"] == v]) for v in voices},
                         "all": summarise(rows), "utterances": rows}
    return {"splits": splits, "targets": check_targets(splits)}, pictures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser, model_required=False)
    parser.add_argument("--out", default="outputs/report")
    parser.add_argument("--per_voice", type=int, default=8)
    parser.add_argument("--per_unseen_voice", type=int, help="utterances per held-out voice (default: --per_voice)")
    parser.add_argument("--sim_judge", default="resemblyzer", help="resemblyzer | none")
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--splits", default=",".join(SPLITS),
                        help="which of seen,unseen to score (a corpus folder may have one only, e.g. "
                             "data_prep.asterisk_prompts writes the held-out-voice split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resynth_f0", default="predicted", choices=RESYNTH_F0,
                        help="tracker: a diagnostic for harmonic decoder heads, the resynthesis' pulse train at the "
                             "original's tracked F0 (an oracle, not the tokenizer's own output)")
    args = parser.parse_args(argv)
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown --parts {unknown}; choose from {PARTS}")
    splits = tuple(s for s in args.splits.split(",") if s)
    if not splits or set(splits) - set(SPLITS):
        parser.error(f"--splits {args.splits!r}: choose from {tuple(SPLITS)}")
    if {"asr", "tts"} & set(parts) and not args.model:
        parser.error("--parts asr/tts need --model (or use --parts resynth)")
    if args.asr_judge == "self":
        parser.error("the report scores the model with independent judges; 'self' would grade its own work")
    torch.set_num_threads(args.threads)
    from holitok import HoliTok

    from .audio_metrics import MissingJudgeError

    try:
        asr_judge = make_asr_judge(args.asr_judge)
        sim_judge = make_speaker_judge(args.sim_judge)
    except MissingJudgeError as err:
        parser.exit(2, f"eval.report: {err}\n")
    if asr_judge is None:
        parser.error("the report needs an ASR judge")
    codec = HoliTok.from_pretrained(args.tokenizer, device="cpu").eval()
    pipeline = None
    if args.model:
        from holitok_slm.infer.pipeline import SpeechPipeline

        pipeline = SpeechPipeline.from_pretrained(args.model, args.tokenizer)
        codec = pipeline.codec
    started = time.time()
    report, pictures = build_report(args.corpus, codec, pipeline, asr_judge, sim_judge, parts, args.per_voice,
                                    args.seed, per_unseen_voice=args.per_unseen_voice, splits=splits,
                                    resynth_f0=args.resynth_f0)
    report = {"tokenizer": str(args.tokenizer), "model": args.model, "corpus": str(args.corpus),
              "per_voice": args.per_voice, "per_unseen_voice": args.per_unseen_voice or args.per_voice,
              "parts": list(parts), "seed": args.seed, "resynth_f0": args.resynth_f0,
              "judges": {"asr": asr_judge.name, "sim": sim_judge.name if sim_judge else "none"},
              "seconds": round(time.time() - started, 1), **report}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    markdown = format_markdown(report)
    (out / "report.md").write_text(markdown)
    spectrogram_picture(pictures, codec.sample_rate, out / "spectrograms.png")
    print(markdown)
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'spectrograms.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
