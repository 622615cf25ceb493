"""The manifest format shared by every corpus builder: one JSON object per line, loadable with `datasets`.

Fields: id, audio (path, relative to the manifest's folder unless absolute), duration (s), text, language,
speaker, task ("tts" | "asr" | "both"), and for zero-shot evaluation lists prompt_text / prompt_audio.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator

import soundfile as sf

TASKS = ("tts", "asr", "both")


@dataclass
class ManifestRecord:
    id: str
    audio: str | None
    duration: float | None
    text: str
    language: str
    speaker: str | None = None
    task: str = "both"
    prompt_text: str | None = None
    prompt_audio: str | None = None

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r} for {self.id}")


def audio_duration(path: str | Path) -> float:
    """Duration from the file header only (fast); raises on missing or unreadable files."""
    info = sf.info(str(path))
    return info.frames / info.samplerate


def _portable_path(path: str | None, base: Path) -> str | None:
    if path is None:
        return None
    path_obj = Path(path)
    if not path_obj.is_absolute():
        return path
    try:
        return str(path_obj.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path_obj)


def write_manifest(records: Iterable[ManifestRecord], path: str | Path, relative_to: str | Path | None = None) -> int:
    """Writes records as JSON lines (audio paths made relative to the manifest folder when they lie under it).
    `relative_to` names the folder that relative input paths are relative to (default: the manifest folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()  # absolute: a relative output folder must not leave its prefix in the paths
    source = Path(relative_to).resolve() if relative_to is not None else base
    count = 0
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            row = asdict(record)
            for key in ("audio", "prompt_audio"):
                if row[key] is not None and not Path(row[key]).is_absolute():
                    row[key] = str(source / row[key])
                row[key] = _portable_path(row[key], base)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count


def resolve_audio(path: str | None, manifest_path: str | Path) -> str | None:
    if path is None or os.path.isabs(path):
        return path
    return str(Path(manifest_path).resolve().parent / path)


def iter_manifest(path: str | Path) -> Iterator[ManifestRecord]:
    """The records of a manifest one at a time (a 100K-hour manifest need not fit in memory), audio paths resolved to
    absolute paths; unknown keys are an error (typos lose data)."""
    known = {f.name for f in fields(ManifestRecord)}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            unknown = set(row) - known
            if unknown:
                raise ValueError(f"{path}:{line_no}: unknown manifest keys {sorted(unknown)}")
            row["audio"] = resolve_audio(row.get("audio"), path)
            row["prompt_audio"] = resolve_audio(row.get("prompt_audio"), path)
            yield ManifestRecord(**row)


def read_manifest(path: str | Path) -> list[ManifestRecord]:
    """All records of a manifest (see iter_manifest)."""
    return list(iter_manifest(path))


def load_manifest_dataset(path: str | Path):
    """The manifest as a `datasets.Dataset` with absolute audio paths."""
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(path), split="train")
    return dataset.map(lambda row: {"audio": resolve_audio(row["audio"], path),
                                    "prompt_audio": resolve_audio(row.get("prompt_audio"), path)})
