"""Manifest builders for public corpus layouts: LibriSpeech, AISHELL-1, Emilia, Common Voice, Seed-TTS-Eval, wav+txt folders.

Every builder returns (records, skipped): an unreadable or missing audio file or an empty transcript is skipped
with its reason instead of stopping the build; the CLI (`python -m data_prep.build_manifest`) reports them.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable, Iterator

import soundfile as sf

from data_prep.manifest import ManifestRecord, audio_duration

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus")
Skipped = list[tuple[str, str]]  # (item id or path, reason)


class Collector:
    """Builds records one candidate at a time, turning per-item failures into skip entries."""

    def __init__(self, read_duration: bool = True):
        self.records: list[ManifestRecord] = []
        self.skipped: Skipped = []
        self.read_duration = read_duration

    def add(self, item_id: str, audio: Path | None, text: str, duration: float | None = None, **kwargs) -> None:
        text = " ".join(text.split())
        if not text:
            self.skipped.append((item_id, "empty transcript"))
            return
        if audio is not None:
            if not audio.exists():
                self.skipped.append((item_id, f"missing audio {audio}"))
                return
            if duration is None and self.read_duration:
                try:
                    duration = audio_duration(audio)
                except (sf.LibsndfileError, RuntimeError) as err:  # soundfile raises these on corrupt headers
                    self.skipped.append((item_id, f"unreadable audio {audio}: {err}"))
                    return
        self.records.append(ManifestRecord(id=item_id, audio=str(audio.resolve()) if audio else None,
                                           duration=None if duration is None else round(duration, 4),
                                           text=text, **kwargs))


def librispeech(root: str | Path, task: str = "asr", **_) -> tuple[list[ManifestRecord], Skipped]:
    """root/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt (lines "ID TEXT") next to ID.flac.
    `root` may be one split (e.g. LibriSpeech/train-clean-100) or the folder holding several splits."""
    out = Collector()
    for trans in sorted(Path(root).rglob("*.trans.txt")):
        speaker = trans.name.split("-")[0]
        for line in trans.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            utt, _, text = line.partition(" ")
            audio = next((trans.parent / f"{utt}{s}" for s in AUDIO_SUFFIXES if (trans.parent / f"{utt}{s}").exists()),
                         trans.parent / f"{utt}.flac")
            out.add(utt, audio, text.lower(), language="en", speaker=speaker, task=task)
    return out.records, out.skipped


def aishell1(root: str | Path, split: str | None = None, task: str = "asr", **_) -> tuple[list[ManifestRecord], Skipped]:
    """root/transcript/aishell_transcript_v0.8.txt + root/wav/<split>/<speaker>/<ID>.wav; word spaces are removed."""
    root = Path(root)
    transcripts = {}
    trans_files = sorted((root / "transcript").glob("*.txt")) if (root / "transcript").is_dir() else []
    if not trans_files:
        raise FileNotFoundError(f"no transcript/*.txt under {root} (expected the AISHELL-1 data_aishell layout)")
    for line in trans_files[0].read_text(encoding="utf-8").splitlines():
        utt, _, text = line.strip().partition(" ")
        if utt:
            transcripts[utt] = "".join(text.split())
    wav_root = root / "wav" / split if split else root / "wav"
    out = Collector()
    seen = set()
    for wav in sorted(wav_root.rglob("*.wav")):
        utt = wav.stem
        seen.add(utt)
        if utt not in transcripts:
            out.skipped.append((utt, "no transcript"))
            continue
        out.add(utt, wav, transcripts[utt], language="zh", speaker=wav.parent.name, task=task)
    return out.records, out.skipped


def emilia(root: str | Path, task: str = "tts", min_dnsmos: float | None = None, **_) -> tuple[list[ManifestRecord], Skipped]:
    """Emilia layout: *.jsonl files (one utterance per line) or per-utterance *.json files, each with
    id, wav (relative to the json file's folder), text, duration, speaker, language and optionally dnsmos
    (items without a dnsmos field are kept by `min_dnsmos`)."""
    out = Collector()

    def rows() -> Iterator[tuple[Path, dict]]:
        for path in sorted(Path(root).rglob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield path, json.loads(line)
        for path in sorted(Path(root).rglob("*.json")):
            yield path, json.loads(path.read_text(encoding="utf-8"))

    for path, row in rows():
        utt = str(row.get("id") or row.get("key") or Path(row.get("wav", path.stem)).stem)
        if min_dnsmos is not None and row.get("dnsmos") is not None and float(row["dnsmos"]) < min_dnsmos:
            out.skipped.append((utt, f"dnsmos {row.get('dnsmos')} < {min_dnsmos}"))
            continue
        wav_name = row.get("wav") or row.get("audio") or f"{path.stem}.mp3"
        language = str(row.get("language", "en")).lower()
        out.add(utt, path.parent / wav_name, str(row.get("text", "")), duration=row.get("duration"),
                language=language, speaker=row.get("speaker"), task=task)
    return out.records, out.skipped


def common_voice(root: str | Path, split: str = "train", task: str = "asr", **_) -> tuple[list[ManifestRecord], Skipped]:
    """root/<split>.tsv (client_id, path, sentence, ..., locale) with audio in root/clips; durations come from
    root/clip_durations.tsv (milliseconds) when present, else from the audio header."""
    root = Path(root)
    durations = {}
    duration_file = root / "clip_durations.tsv"
    if duration_file.exists():
        with open(duration_file, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                durations[row["clip"]] = float(row["duration[ms]"]) / 1000.0
    out = Collector()
    with open(root / f"{split}.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            clip = row["path"]
            out.add(Path(clip).stem, root / "clips" / clip, row.get("sentence", ""), duration=durations.get(clip),
                    language=row.get("locale") or "en", speaker=row.get("client_id"), task=task)
    return out.records, out.skipped


def seed_tts_eval(root: str | Path, meta: str = "meta.lst", language: str | None = None, **_) -> tuple[list[ManifestRecord], Skipped]:
    """Seed-TTS-Eval list `utt|prompt_text|prompt_wav|target_text[|gt_wav]`, wav paths relative to the list's folder.
    `root` is the list file itself or its folder (then `meta` names the file)."""
    meta_path = Path(root) if Path(root).is_file() else Path(root) / meta
    language = language or ("zh" if "zh" in meta_path.parts else "en")
    out = Collector()
    for line_no, line in enumerate(meta_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").split("|")
        if len(parts) not in (4, 5):
            out.skipped.append((f"{meta_path.name}:{line_no}", f"expected 4 or 5 '|' fields, got {len(parts)}"))
            continue
        utt, prompt_text, prompt_wav, target_text = parts[:4]
        prompt_path = meta_path.parent / prompt_wav
        if not prompt_path.exists():
            out.skipped.append((utt, f"missing prompt audio {prompt_path}"))
            continue
        gt_path = meta_path.parent / parts[4] if len(parts) == 5 and parts[4] else None
        out.add(utt, gt_path, target_text, language=language, speaker=None, task="tts",
                prompt_text=prompt_text, prompt_audio=str(prompt_path.resolve()))
    return out.records, out.skipped


def wav_folder(root: str | Path, language: str = "en", task: str = "both", speaker_from_parent: bool = True,
               **_) -> tuple[list[ManifestRecord], Skipped]:
    """Any folder tree of audio files, each with a transcript next to it: same stem + .txt (or .lab)."""
    out = Collector()
    for audio in sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
        transcript = next((audio.with_suffix(s) for s in (".txt", ".lab") if audio.with_suffix(s).exists()), None)
        if transcript is None:
            out.skipped.append((str(audio), "no .txt/.lab transcript"))
            continue
        rel_id = str(audio.relative_to(root).with_suffix("")).replace("/", "__")
        out.add(rel_id, audio, transcript.read_text(encoding="utf-8"), language=language,
                speaker=audio.parent.name if speaker_from_parent else None, task=task)
    return out.records, out.skipped


BUILDERS: dict[str, Callable[..., tuple[list[ManifestRecord], Skipped]]] = {
    "librispeech": librispeech,
    "aishell1": aishell1,
    "emilia": emilia,
    "common_voice": common_voice,
    "seed_tts_eval": seed_tts_eval,
    "folder": wav_folder,
}
