"""Signal-level quality metrics between a reference and a degraded waveform: PESQ (NB/WB), STOI, log-mel distance.

PESQ and STOI come from the `eval` extra (`pip install -e .[eval]`: pesq, pystoi); importing this module never needs
them, calling those metrics without them raises a MissingJudgeError that says what to install.
All inputs are mono float waveforms at `sample_rate`; both signals are cut to the shorter length first (a codec may
pad to whole frames). PESQ runs at 16 kHz (WB, P.862.2) and 8 kHz (NB, P.862), STOI at 16 kHz, as is customary.
"""
from __future__ import annotations

import numpy as np
import torch

from holitok.audio import resample

PESQ_MAX_WB = 4.644  # the P.862.2 mapping's ceiling: identical signals score this
PESQ_MAX_NB = 4.549  # the P.862.1 MOS-LQO mapping's ceiling


class MissingJudgeError(RuntimeError):
    """An optional evaluation package or model is not installed; the message says how to get it."""


def _as_numpy(audio) -> np.ndarray:
    data = audio.detach().cpu().float().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio, np.float32)
    data = np.squeeze(data).astype(np.float32)
    if data.ndim != 1:
        raise ValueError(f"expected a mono waveform, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("waveform contains NaN or inf")
    return data


def aligned_pair(reference, degraded) -> tuple[np.ndarray, np.ndarray]:
    ref, deg = _as_numpy(reference), _as_numpy(degraded)
    n = min(len(ref), len(deg))
    if n == 0:
        raise ValueError("cannot compare an empty waveform")
    return ref[:n], deg[:n]


def pesq_score(reference, degraded, sample_rate: int, mode: str = "wb") -> float:
    """PESQ MOS-LQO; `mode` "wb" (16 kHz) or "nb" (8 kHz). Raises ValueError when PESQ finds no speech."""
    try:
        from pesq import NoUtterancesError, PesqError, pesq
    except ImportError as err:
        raise MissingJudgeError("PESQ needs the `pesq` package: pip install -e '.[eval]' (or pip install pesq)") from err
    if mode not in ("wb", "nb"):
        raise ValueError(f"PESQ mode must be 'wb' or 'nb', got {mode!r}")
    rate = 16000 if mode == "wb" else 8000
    ref, deg = aligned_pair(reference, degraded)
    if not np.abs(ref).max() > 0:
        raise ValueError("PESQ: the reference is silent")
    ref, deg = resample(ref, sample_rate, rate), resample(deg, sample_rate, rate)
    try:
        return float(pesq(rate, ref, deg, mode))
    except (NoUtterancesError, PesqError) as err:
        raise ValueError(f"PESQ {mode} failed: {type(err).__name__}: {err}") from err


def stoi_score(reference, degraded, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (0..1), computed at 16 kHz."""
    try:
        from pystoi import stoi
    except ImportError as err:
        raise MissingJudgeError("STOI needs the `pystoi` package: pip install -e '.[eval]' (or pip install pystoi)") from err
    ref, deg = aligned_pair(reference, degraded)
    return float(stoi(resample(ref, sample_rate, 16000), resample(deg, sample_rate, 16000), 16000, extended=extended))


_MEL_CACHE: dict[int, torch.nn.Module] = {}


def mel_distance(reference, degraded, sample_rate: int) -> float:
    """Mean |log10 mel(ref) - log10 mel(deg)| over a 128-band, 2048-point / 10 ms hop analysis of the aligned pair."""
    from holitok.train.mel import LogMelSpectrogram  # the tokenizer's own mel front end, so numbers match training

    if sample_rate not in _MEL_CACHE:
        _MEL_CACHE[sample_rate] = LogMelSpectrogram(sample_rate, n_fft=2048, hop_length=sample_rate // 100,
                                                    n_mels=128)
    ref, deg = aligned_pair(reference, degraded)
    mel = _MEL_CACHE[sample_rate]
    with torch.no_grad():
        return float((mel(torch.from_numpy(ref)[None]) - mel(torch.from_numpy(deg)[None])).abs().mean())


def cosine_similarity(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        raise ValueError("cosine similarity of a zero vector")
    return float(a @ b / denom)
