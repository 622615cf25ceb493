"""Training data: a JSONL manifest or an audio folder -> random 48 kHz crops (or whole utterances) with labels."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..audio import AudioError, load_audio

logger = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# Manifest fields that become supervision targets (Stage III), keyed by task name.
LABEL_FIELDS = {"asr": "text", "emotion": "emotion", "caption": "caption", "sound_event": "sound_event"}


@dataclass
class AudioItem:
    path: str
    labels: dict[str, str]


def _label_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):  # e.g. several sound-event tags
        value = ", ".join(str(v) for v in value)
    value = str(value).strip()
    return value or None


def read_items(source: str | Path) -> list[AudioItem]:
    """Items from a JSONL manifest (``audio`` relative to the manifest's folder) or every audio file under a folder."""
    source = Path(source)
    if source.is_dir():
        items = []
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            transcript = path.with_suffix(".txt")
            labels = {"asr": transcript.read_text().strip()} if transcript.is_file() else {}
            items.append(AudioItem(str(path), {k: v for k, v in labels.items() if v}))
    elif source.is_file():
        items = []
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{source}:{number} is not valid JSON: {err}") from None
            if not isinstance(row, dict) or not row.get("audio"):
                raise ValueError(f"{source}:{number} has no 'audio' field")
            path = Path(row["audio"])
            path = path if path.is_absolute() else source.parent / path
            labels = {task: _label_text(row.get(name)) for task, name in LABEL_FIELDS.items()}
            items.append(AudioItem(str(path), {k: v for k, v in labels.items() if v}))
    else:
        raise FileNotFoundError(f"training data not found: {source} (expected a JSONL manifest or an audio folder)")
    if not items:
        raise ValueError(f"no audio found in {source}")
    return items


class AudioDataset(Dataset):
    """Returns ``{"audio": [L] float32 at 48 kHz, "labels": {task: text}, "path": str}``.

    With ``segment_samples`` each item is a random crop of exactly that many samples (zero-padded when the file is
    shorter; the true length is kept so masks can ignore the padding); otherwise the whole file up to
    ``max_samples``. Unreadable files are reported and replaced by another item rather than stopping a long run.
    """

    def __init__(self, source: str | Path, sample_rate: int, segment_samples: int | None = None,
                 max_samples: int | None = None, random_crop: bool = True):
        self.items = read_items(source)
        self.sample_rate, self.segment_samples, self.max_samples = sample_rate, segment_samples, max_samples
        self.random_crop = random_crop
        self.failures = 0

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> torch.Tensor:
        return load_audio(self.items[index].path, target_sample_rate=self.sample_rate)

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(10):
            try:
                audio = self._load(index)
                break
            except AudioError as err:
                self.failures += 1
                logger.warning("skipping unreadable training file (%s); %d so far", err, self.failures)
                index = random.randrange(len(self.items))
        else:
            raise AudioError(f"10 unreadable files in a row (last: {self.items[index].path}); check the data")
        length = audio.shape[0]
        if self.segment_samples is not None:
            if length > self.segment_samples:
                start = random.randrange(length - self.segment_samples + 1) if self.random_crop else 0
                audio, length = audio[start:start + self.segment_samples], self.segment_samples
            else:
                audio = torch.nn.functional.pad(audio, (0, self.segment_samples - length))
        elif self.max_samples is not None and length > self.max_samples:
            audio, length = audio[:self.max_samples], self.max_samples
        return {"audio": audio, "length": length, "labels": dict(self.items[index].labels),
                "path": self.items[index].path}


class Collator:
    """Pads to the longest item rounded up to a multiple of the hop, so every latent frame covers real samples."""

    def __init__(self, hop_size: int):
        self.hop_size = hop_size

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(item["audio"].shape[0] for item in items)
        padded_length = -(-longest // self.hop_size) * self.hop_size
        audio = torch.zeros(len(items), 1, padded_length)
        for row, item in enumerate(items):
            audio[row, 0, :item["audio"].shape[0]] = item["audio"]
        return {
            "audio": audio,
            "lengths": torch.tensor([item["length"] for item in items], dtype=torch.long),
            "labels": [item["labels"] for item in items],
            "paths": [item["path"] for item in items],
        }
