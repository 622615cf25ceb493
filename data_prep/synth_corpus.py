"""Built-in synthetic multi-speaker English corpus rendered with Debian's synthesisers (flite, festival, espeak-ng).

Output layout (all audio 48 kHz mono 16-bit wav, resampled with soxr):
  OUT/wavs/<voice>/<voice>-<n>.wav
  OUT/train.jsonl              train voices x train sentences (TTS and ASR)
  OUT/test_seen_voice.jsonl    train voices x held-out sentences
  OUT/test_unseen_voice.jsonl  held-out voices x held-out sentences
  OUT/seed_tts_eval/meta.lst   zero-shot cloning list (utt|prompt_text|prompt_wav|target_text|gt_wav) on held-out voices
  OUT/corpus.json              voices, counts, hours, generator settings (the run is skipped if this already matches)

Usage:
  python -m data_prep.synth_corpus --out data/synth                  # default: a few hours (about 10 min on 2 cores)
  python -m data_prep.synth_corpus --out /tmp/synth_tiny --preset tiny   # a few seconds of audio for tests
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from tqdm import tqdm

from data_prep.manifest import ManifestRecord, write_manifest
from data_prep.sentences import SentenceGenerator

TARGET_SR = 48000


@dataclass(frozen=True)
class Voice:
    name: str
    engine: str  # flite | festival | espeak
    voice: str   # engine-specific voice id
    # Played back this much faster (pitch and formants up by the same factor): a resampled render is another
    # plausible speaker (vocal tract length perturbation), which the few engines installed here need (docs/data.md).
    speed: float = 1.0

    def command(self, text_file: str, wav_out: str) -> list[str]:
        if self.engine == "flite":
            return ["flite", "-voice", self.voice, "-f", text_file, "-o", wav_out]
        if self.engine == "festival":
            return ["text2wave", "-eval", f"({self.voice})", text_file, "-o", wav_out]
        if self.engine == "espeak":
            return ["espeak-ng", "-v", self.voice, "-f", text_file, "-w", wav_out]
        raise ValueError(f"unknown engine {self.engine!r}")


VOICES = {v.name: v for v in [
    Voice("flite_slt", "flite", "slt"),
    Voice("flite_rms", "flite", "rms"),
    Voice("flite_awb", "flite", "awb"),
    Voice("flite_kal16", "flite", "kal16"),
    Voice("festival_slt_hts", "festival", "voice_cmu_us_slt_arctic_hts"),
    Voice("festival_kal", "festival", "voice_kal_diphone"),
    Voice("espeak_us_f3", "espeak", "en-us+f3"),
    Voice("espeak_gb_m3", "espeak", "en-gb+m3"),
    Voice("espeak_scotland_f2", "espeak", "en-gb-scotland+f2"),
    Voice("espeak_rp_m5", "espeak", "en-gb-x-rp+m5"),
    Voice("espeak_us_m1", "espeak", "en-us+m1"),
    Voice("espeak_us_f1", "espeak", "en-us+f1"),
    Voice("espeak_caribbean_m2", "espeak", "en-029+m2"),
    Voice("espeak_lancaster_f4", "espeak", "en-gb-x-gbclan+f4"),
    Voice("espeak_nyc_m4", "espeak", "en-us-nyc+m4"),
    Voice("espeak_midlands_m7", "espeak", "en-gb-x-gbcwmd+m7"),
    Voice("flite_rms_x112", "flite", "rms", speed=1.12),
    Voice("flite_slt_x088", "flite", "slt", speed=0.88),
    Voice("flite_kal16_x090", "flite", "kal16", speed=0.90),
    Voice("festival_kal_x110", "festival", "voice_kal_diphone", speed=1.10),
]}


@dataclass
class CorpusConfig:
    train_voices: list[str] = field(default_factory=lambda: [
        "flite_slt", "flite_rms", "flite_kal16", "festival_slt_hts", "festival_kal",
        "espeak_us_f3", "espeak_gb_m3", "espeak_scotland_f2",
        # more speakers, so that a model can read a voice it never heard (docs/learning.md section 9)
        "espeak_us_m1", "espeak_us_f1", "espeak_caribbean_m2", "espeak_lancaster_f4", "espeak_nyc_m4",
        "espeak_midlands_m7", "flite_rms_x112", "flite_slt_x088", "flite_kal16_x090", "festival_kal_x110"])
    heldout_voices: list[str] = field(default_factory=lambda: ["flite_awb", "espeak_rp_m5"])
    train_utterances_per_voice: int = 240   # 18 voices x 240 x ~4 s = about 4.8 h
    test_utterances_per_voice: int = 20
    train_sentence_pool: int = 2400         # voices draw overlapping subsets, so texts recur across speakers
    test_sentence_pool: int = 100           # never used in train
    max_words: int = 24
    seed: int = 1234
    # data_prep/sentences.py VOCABULARIES: "base" (447 words; every corpus before session 22) or "large" (~1600)
    vocabulary: str = "base"


PRESETS = {
    "default": CorpusConfig(),
    "tiny": CorpusConfig(
        train_voices=["flite_slt", "flite_rms", "espeak_us_f3"], heldout_voices=["espeak_gb_m3"],
        train_utterances_per_voice=4, test_utterances_per_voice=2, train_sentence_pool=8, test_sentence_pool=3,
        max_words=9),
}


def render(voice: Voice, text: str, wav_path: Path) -> float:
    """Synthesises `text` with `voice`, resamples to 48 kHz and writes `wav_path`; returns its duration in seconds."""
    # festival's diphone voices crash on text that starts with punctuation; our sentences never do, but user text might.
    text = text.lstrip(".,;:!?-' \"")
    with tempfile.TemporaryDirectory() as tmp:
        text_file, raw_wav = os.path.join(tmp, "in.txt"), os.path.join(tmp, "raw.wav")
        Path(text_file).write_text(text + "\n", encoding="utf-8")
        proc = subprocess.run(voice.command(text_file, raw_wav), capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(raw_wav):
            raise RuntimeError(f"{voice.engine} ({voice.voice}) failed on {text!r}: {proc.stderr.strip()[-400:]}")
        audio, sr = sf.read(raw_wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    sr = round(sr * voice.speed)  # the same samples played at another rate
    if sr != TARGET_SR:
        audio = soxr.resample(audio, sr, TARGET_SR, "HQ")
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak > 0.99:  # resampling can overshoot full scale slightly; avoid clipping in the 16-bit file
        audio = audio * (0.99 / peak)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav_path, audio, TARGET_SR, subtype="PCM_16")
    return len(audio) / TARGET_SR


def same_config(saved: dict | None, cfg: CorpusConfig) -> bool:
    """Whether a corpus.json's config is `cfg`; settings added later count as their defaults (a corpus rendered before
    `vocabulary` existed is a "base" corpus, and is kept)."""
    return saved is not None and {**asdict(CorpusConfig()), **saved} == asdict(cfg)


def plan(cfg: CorpusConfig) -> dict[str, list[tuple[str, str, str]]]:
    """Deterministic (voice, utterance id, text) jobs for each split."""
    for name in cfg.train_voices + cfg.heldout_voices:
        if name not in VOICES:
            raise ValueError(f"unknown voice {name!r}; choose from {sorted(VOICES)}")
    if set(cfg.train_voices) & set(cfg.heldout_voices):
        raise ValueError("a voice cannot be both a train and a held-out voice")
    gen = SentenceGenerator(cfg.seed, cfg.vocabulary)
    test_pool = gen.sample(cfg.test_sentence_pool, cfg.max_words)
    train_pool = gen.sample(cfg.train_sentence_pool, cfg.max_words)  # same generator: never repeats a test sentence
    rng = np.random.default_rng(cfg.seed)
    splits: dict[str, list[tuple[str, str, str]]] = {"train": [], "test_seen_voice": [], "test_unseen_voice": []}

    def draw(pool: list[str], n: int) -> list[str]:
        order = rng.permutation(len(pool)).tolist()
        return [pool[order[i % len(pool)]] for i in range(n)]

    for name in cfg.train_voices:
        for i, text in enumerate(draw(train_pool, cfg.train_utterances_per_voice)):
            splits["train"].append((name, f"{name}-train-{i:05d}", text))
        for i, text in enumerate(draw(test_pool, cfg.test_utterances_per_voice)):
            splits["test_seen_voice"].append((name, f"{name}-test-{i:05d}", text))
    for name in cfg.heldout_voices:
        # one extra utterance per held-out voice serves as the zero-shot prompt
        for i, text in enumerate(draw(test_pool, cfg.test_utterances_per_voice + 1)):
            splits["test_unseen_voice"].append((name, f"{name}-test-{i:05d}", text))
    return splits


def build_corpus(out: str | Path, cfg: CorpusConfig, workers: int = 2, progress: bool = True) -> dict:
    """Renders the corpus into `out`; returns the summary written to corpus.json. Re-running with the same config
    keeps already rendered files (rendering is deterministic), so an interrupted build just continues."""
    out = Path(out)
    summary_path, plan_path = out / "corpus.json", out / "corpus.building.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if same_config(summary.get("config"), cfg):
            return summary
    # Files are named by voice and index, not by text: wavs rendered under another configuration would carry
    # other sentences under the same names, so they are removed before anything is reused.
    previous = summary_path if summary_path.exists() else plan_path
    if previous.exists() and not same_config(json.loads(previous.read_text()).get("config"), cfg):
        print(f"{out}: rendered for another corpus configuration; removing its wavs and manifests")
        shutil.rmtree(out / "wavs", ignore_errors=True)
        summary_path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(json.dumps({"config": asdict(cfg)}, indent=2))
    for tool in {"flite", "text2wave", "espeak-ng"}:
        if shutil.which(tool) is None:
            raise RuntimeError(f"`{tool}` not found: run scripts/setup.sh (apt-get install espeak-ng flite festival "
                               "festvox-kallpc16k festvox-us-slt-hts)")
    splits = plan(cfg)
    jobs = [(split, *job) for split, items in splits.items() for job in items]

    def run(job: tuple[str, str, str, str]) -> tuple[str, ManifestRecord]:
        split, voice_name, utt_id, text = job
        wav_path = out / "wavs" / voice_name / f"{utt_id}.wav"
        if wav_path.exists():
            duration = sf.info(str(wav_path)).frames / TARGET_SR
        else:
            tmp_path = wav_path.with_name(wav_path.stem + ".partial.wav")
            duration = render(VOICES[voice_name], text, tmp_path)
            os.replace(tmp_path, wav_path)  # a killed build never leaves a truncated wav under the final name
        record = ManifestRecord(id=utt_id, audio=str(wav_path.relative_to(out)), duration=round(duration, 4),
                                text=text, language="en", speaker=voice_name, task="both")
        return split, record

    records: dict[str, list[ManifestRecord]] = {name: [] for name in splits}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # the work is in subprocesses, threads suffice
        for split, record in tqdm(pool.map(run, jobs), total=len(jobs), desc="synthesising", disable=not progress,
                                  unit="utt"):
            records[split].append(record)
    for split, items in records.items():
        write_manifest(items, out / f"{split}.jsonl", relative_to=out)
    write_seed_tts_meta(records["test_unseen_voice"], out / "seed_tts_eval" / "meta.lst", out)
    summary = {
        "config": asdict(cfg),
        "sample_rate": TARGET_SR,
        "text_source": "data_prep.sentences.SentenceGenerator (seeded English grammar, numbers as words)",
        "splits": {split: {"utterances": len(items), "hours": round(sum(r.duration for r in items) / 3600, 4)}
                   for split, items in records.items()},
    }
    summary_path.write_text(json.dumps(summary, indent=2))
    plan_path.unlink(missing_ok=True)
    return summary


def write_seed_tts_meta(records: list[ManifestRecord], meta_path: Path, corpus_root: Path) -> None:
    """Seed-TTS-Eval style list: each held-out voice's first utterance is the prompt for its other utterances."""
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    by_voice: dict[str, list[ManifestRecord]] = {}
    for record in records:
        by_voice.setdefault(record.speaker, []).append(record)
    lines = []
    for voice_records in by_voice.values():
        prompt, targets = voice_records[0], voice_records[1:]
        prompt_wav = os.path.relpath(corpus_root / prompt.audio, meta_path.parent)
        for target in targets:
            gt_wav = os.path.relpath(corpus_root / target.audio, meta_path.parent)
            lines.append(f"{target.id}|{prompt.text}|{prompt_wav}|{target.text}|{gt_wav}")
    meta_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--train_utterances_per_voice", type=int, help="override the preset (scales the hours)")
    parser.add_argument("--train_sentence_pool", type=int, help="override the preset (distinct training sentences)")
    parser.add_argument("--seed", type=int, help="override the preset's seed")
    parser.add_argument("--vocabulary", choices=("base", "large"),
                        help="override the preset's sentence vocabulary (data_prep/sentences.py: base 447 words, "
                             "large ~1600)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    cfg = PRESETS[args.preset]
    overrides = {k: v for k, v in {"train_utterances_per_voice": args.train_utterances_per_voice,
                                   "train_sentence_pool": args.train_sentence_pool, "seed": args.seed,
                                   "vocabulary": args.vocabulary}.items() if v is not None}
    cfg = CorpusConfig(**{**asdict(cfg), **overrides})
    summary = build_corpus(args.out, cfg, workers=args.workers)
    print(json.dumps(summary["splits"], indent=2))


if __name__ == "__main__":
    main()
