"""Audio I/O and input checks: read any soundfile format, mix to mono, resample to 48 kHz (soxr), validate."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

MODEL_SAMPLE_RATE = 48000


class AudioError(ValueError):
    """Input audio that cannot be used: unreadable, empty, non-finite or of the wrong shape."""


def resample(audio: np.ndarray, orig_sr: int, target_sr: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling (soxr HQ) along the last axis."""
    if orig_sr == target_sr:
        return audio
    import soxr
    if audio.ndim == 1:
        return soxr.resample(audio, orig_sr, target_sr, "HQ").astype(np.float32)
    return np.stack([soxr.resample(a, orig_sr, target_sr, "HQ") for a in audio]).astype(np.float32)


def audio_file_info(path: str | Path, max_seconds: float | None = None) -> tuple[int, int]:
    """(samples per channel, sample_rate) from the file's header, without decoding it; AudioError when the file is
    missing, unreadable or longer than `max_seconds`."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises several types for files it cannot parse
        reason = getattr(err, "error_string", None) or " ".join(str(err).split()) or type(err).__name__
        raise AudioError(f"cannot read audio file {path}: {reason}") from None
    _check_length(info.frames, info.samplerate, max_seconds, str(path))
    return int(info.frames), int(info.samplerate)


def _check_length(samples: int, sample_rate: float, max_seconds: float | None, what: str = "audio") -> None:
    if max_seconds is not None and samples > max_seconds * sample_rate:
        raise AudioError(f"{what} is {samples / sample_rate:.1f} s long; the limit is {max_seconds:g} s")


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples [L] or [C, L] float32, sample_rate) from any file libsndfile reads (wav, flac, ogg, mp3)."""
    import soundfile as sf
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot read audio file {path}: {err}") from None
    return (data[:, 0] if data.shape[1] == 1 else data.T), int(sr)


def load_audio(source: Any, sample_rate: int | None = None, *, target_sample_rate: int = MODEL_SAMPLE_RATE,
               mono: str = "mix", max_seconds: float | None = None) -> Tensor:
    """A path or array (at `sample_rate`) -> float32 mono tensor [L] at `target_sample_rate`, validated.

    `mono="mix"` averages channels; `mono="refuse"` raises on multi-channel input. `max_seconds` refuses longer
    audio before any decoding or resampling (a file's length comes from its header).
    """
    if sample_rate is not None and not (isinstance(sample_rate, (int, float, np.number)) and sample_rate > 0):
        raise AudioError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    if isinstance(source, (str, Path)):
        if max_seconds is not None:
            audio_file_info(source, max_seconds)
        data, sr = read_audio(source)
        if sample_rate is not None and sample_rate != sr:
            raise AudioError(f"{source} is {sr} Hz but sample_rate={sample_rate} was given")
    else:
        data = source.detach().cpu().numpy() if isinstance(source, Tensor) else np.asarray(source)
        sr = target_sample_rate if sample_rate is None else sample_rate
        if data.dtype.kind not in "iuf":
            raise AudioError(f"audio must be a path or numeric samples, got {type(source).__name__} of dtype "
                             f"{data.dtype}")
        if data.dtype.kind in "iu":  # PCM integers -> [-1, 1]
            data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
        data = data.astype(np.float32)
        if data.size == 0:  # also [0, C] or [C, 0]: no layout guess needed
            raise AudioError("audio is empty (0 samples)")
        data = np.atleast_1d(np.squeeze(data))
        if data.ndim == 2 and data.shape[0] > data.shape[1]:
            data = data.T  # [L, C] -> [C, L]
        if data.ndim <= 2:
            _check_length(data.shape[-1], sr, max_seconds)
    if data.ndim == 2:
        if mono == "refuse":
            raise AudioError(f"expected mono audio, got {data.shape[0]} channels")
        data = data.mean(axis=0)
    if data.ndim != 1:
        raise AudioError(f"expected a mono or multi-channel 1-D signal, got shape {data.shape}")
    check_audio(data)
    return torch.from_numpy(np.ascontiguousarray(resample(data, sr, target_sample_rate)))


def check_audio(data: np.ndarray | Tensor, *, allow_empty: bool = False) -> None:
    n = data.shape[-1] if data.ndim else 0
    if n == 0 and not allow_empty:
        raise AudioError("audio is empty (0 samples)")
    finite = torch.isfinite(data).all() if isinstance(data, Tensor) else np.isfinite(data).all()
    if not finite:
        raise AudioError("audio contains NaN or inf samples")


def as_model_input(audio: Any, *, device: torch.device | str = "cpu", allow_empty: bool = False) -> Tensor:
    """[L], [B, L] or [B, 1, L] (tensor or array, already 48 kHz) -> float32 [B, 1, L]; refuses multi-channel."""
    x = torch.as_tensor(audio if not isinstance(audio, np.ndarray) else np.ascontiguousarray(audio))
    x = x.to(device=device, dtype=torch.float32)
    if x.dim() == 1:
        x = x[None, None]
    elif x.dim() == 2:
        x = x[:, None]
    elif x.dim() != 3 or x.shape[1] != 1:
        raise AudioError(f"expected mono audio [L], [B, L] or [B, 1, L]; got {tuple(x.shape)} "
                         "(mix multi-channel audio down first, e.g. holitok.audio.load_audio)")
    check_audio(x, allow_empty=allow_empty)
    return x


def save_audio(path: str | Path, audio: Tensor | np.ndarray, sample_rate: int = MODEL_SAMPLE_RATE) -> None:
    import soundfile as sf
    data = audio.detach().cpu().float().numpy() if isinstance(audio, Tensor) else np.asarray(audio, np.float32)
    data = np.squeeze(data)
    if data.ndim != 1:
        raise AudioError(f"save_audio writes one mono signal, got shape {data.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, sample_rate, subtype="FLOAT" if str(path).endswith(".wav") else None)
