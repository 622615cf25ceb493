"""Mel spectrogram front end (torch.stft + Slaney mel filters) and the multi-scale mel L1 reconstruction loss."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

def hz_to_mel_slaney(freq: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (the scale librosa and BigVGAN use)."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = freq / f_sp
    log = min_log_mel + torch.log(torch.clamp(freq, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(freq >= min_log_hz, log, linear)


def mel_to_hz_slaney(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel_slaney`."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    linear = mel * f_sp
    log = min_log_hz * torch.exp(logstep * (mel - min_log_mel))
    return torch.where(mel >= min_log_mel, log, linear)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Slaney-normalised triangular mel filters, [n_mels, n_fft // 2 + 1] (float32)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={fmin} fmax={fmax} sr={sample_rate}")
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(
        float(hz_to_mel_slaney(torch.tensor(fmin, dtype=torch.float64))),
        float(hz_to_mel_slaney(torch.tensor(fmax, dtype=torch.float64))),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_points = mel_to_hz_slaney(mel_points)
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (fft_freqs[None] - lower) / (centre - lower)
    falling = (upper - fft_freqs[None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    weights = weights * (2.0 / (upper - lower))
    return weights.float()


class LogMelSpectrogram(torch.nn.Module):
    """``log10(max(mel(|STFT|), eps))`` of [B, 1, L] or [B, L] audio -> [B, n_mels, frames] (always float32)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, fmin: float = 0.0,
                 fmax: float | None = None, clamp_eps: float = 1e-5, power: float = 1.0):
        super().__init__()
        self.n_fft, self.hop_length, self.clamp_eps, self.power = n_fft, hop_length, clamp_eps, power
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("filters", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        audio = audio.reshape(-1, audio.shape[-1]).float()
        # Reflect padding needs more samples than half a window; short test clips fall back to zero padding.
        pad_mode = "reflect" if audio.shape[-1] > self.n_fft // 2 else "constant"
        spec = torch.stft(audio, self.n_fft, self.hop_length, window=self.window, center=True, pad_mode=pad_mode,
                          return_complex=True)
        magnitude = spec.abs().pow(self.power)
        mel = torch.matmul(self.filters, magnitude)
        return torch.log10(torch.clamp(mel, min=self.clamp_eps))


@dataclass
class MelLossConfig:
    """Multi-scale mel L1 (BigVGAN-v2/DAC style): one STFT per window length, hop = window // 4."""

    n_mels: list[int] = field(default_factory=lambda: [5, 10, 20, 40, 80, 160, 320])
    window_lengths: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048])
    fmin: float = 0.0
    fmax: float | None = None
    clamp_eps: float = 1e-5
    # "mean" keeps the Table-7 weight 45 on the scale of a single-resolution mel L1 (HiFi-GAN's convention).
    reduction: str = "mean"

    def __post_init__(self):
        if len(self.n_mels) != len(self.window_lengths) or not self.n_mels:
            raise ValueError("mel_loss.n_mels and mel_loss.window_lengths must be non-empty and the same length, got "
                             f"{self.n_mels} and {self.window_lengths}")
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"mel_loss.reduction must be 'mean' or 'sum', got {self.reduction!r}")


class MultiScaleMelLoss(torch.nn.Module):
    """L1 distance between log-mel spectrograms at several STFT resolutions, reduced over scales."""

    def __init__(self, sample_rate: int, config: MelLossConfig | None = None):
        super().__init__()
        self.config = config or MelLossConfig()
        self.transforms = torch.nn.ModuleList(
            LogMelSpectrogram(sample_rate, win, win // 4, mels, self.config.fmin, self.config.fmax, self.config.clamp_eps)
            for mels, win in zip(self.config.n_mels, self.config.window_lengths)
        )

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(f"mel loss needs equal shapes, got prediction {tuple(prediction.shape)} "
                             f"and target {tuple(target.shape)}")
        losses = [F.l1_loss(transform(prediction), transform(target)) for transform in self.transforms]
        total = torch.stack(losses).sum()
        return total / len(losses) if self.config.reduction == "mean" else total
