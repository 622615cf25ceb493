"""Causal short-time spectrum front end for the encoder: waveform -> log-magnitude frames -> learned projection.

Not part of the released HoliTok models (their encoder starts with a waveform conv stem). It exists for the small
CPU presets (`config.encoder_frontend = "stft"`): a tiny time-domain encoder has to discover spectral analysis from
scratch and, trained for minutes, only learns loudness (docs/learning.md); a fixed windowed DFT gives it the spectrum
on the first step. The DFT is a strided conv with a fixed kernel, so it is causal (frame j ends at sample j * hop)
and streams through the same machinery as every other conv.

A window short enough for timing (960 samples: 50 Hz bins, a Hann main lobe 200 Hz wide) blurs the harmonics of
low voices: a probe reads F0 from it to 32 cents, from a 3840-sample window to 18 (docs/learning.md section 32).
`long_n_fft` adds a second, longer window over the bins below `long_max_hz` (3840 samples: 12.5 Hz bins), ending at
the same sample, so it costs no latency; its projection starts at zero, so a tokenizer trained without it starts
from where it was.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Conv1d, stream_conv1d

# log|X| of speech at ordinary levels lies in about [-9, 0] with the window normalised to unit sum: centred, scaled.
LOG_OFFSET, LOG_SCALE, POWER_FLOOR = 5.0, 1.0 / 3.0, 1e-8


class CausalDFT(nn.Module):
    """A Hann-windowed DFT every `hop` samples, frame j ending at sample j * hop: [B, 1, L] -> [B, bins, T] log|X|."""

    def __init__(self, n_fft: int, hop: int, bins: int) -> None:
        super().__init__()
        self.n_fft, self.hop, self.bins = n_fft, hop, bins
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        window = window / window.sum()
        t = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        # Oldest sample first, so that tap n_fft - 1 multiplies the newest sample of the frame.
        basis = torch.cat([torch.cos(2 * math.pi * k * t / n_fft), -torch.sin(2 * math.pi * k * t / n_fft)]) * window
        self.register_buffer("basis", basis[:, None, :].float(), persistent=False)

    @staticmethod
    def _log_magnitude(spec: Tensor) -> Tensor:
        real, imag = spec.chunk(2, dim=1)
        power = real.square() + imag.square()
        return (0.5 * torch.log(power + POWER_FLOOR) + LOG_OFFSET) * LOG_SCALE

    def forward(self, audio: Tensor) -> Tensor:
        return self._log_magnitude(F.conv1d(F.pad(audio, (self.n_fft - 1, 0)), self.basis, stride=self.hop))

    def step(self, audio: Tensor, state: dict) -> Tensor:
        spec = stream_conv1d(self, audio, state, self.basis, None, stride=self.hop, dilation=1, groups=1,
                             pad_left=self.n_fft - 1)
        return self._log_magnitude(spec)


class STFTFrontend(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int, sample_rate: int = 48000, long_n_fft: int = 0,
                 long_max_hz: float = 2000.0) -> None:
        super().__init__()
        if n_fft < hop:
            raise ValueError(f"stft front end needs n_fft >= hop, got n_fft={n_fft}, hop={hop}")
        self.n_fft, self.hop, self.bins = n_fft, hop, n_fft // 2 + 1
        self.dft = CausalDFT(n_fft, hop, self.bins)
        self.proj = Conv1d(self.bins, channels, 1)
        if long_n_fft:
            if long_n_fft <= n_fft:
                raise ValueError(f"frontend_long_n_fft must exceed frontend_n_fft {n_fft}, got {long_n_fft}")
            self.long_dft = CausalDFT(long_n_fft, hop, int(long_max_hz * long_n_fft / sample_rate) + 1)
            self.long_proj = Conv1d(self.long_dft.bins, channels, 1, weight_norm=False)
            self.long_proj.zero_init = True  # HoliTok.reset_parameters keeps it at zero (see the module docstring)
            with torch.no_grad():
                self.long_proj.weight.zero_()
                self.long_proj.bias.zero_()

    def _project(self, magnitude: Tensor, long_magnitude: Tensor | None) -> Tensor:
        out = self.proj(magnitude)
        return out if long_magnitude is None else out + self.long_proj(long_magnitude)

    def forward(self, audio: Tensor) -> Tensor:
        """[B, 1, L] -> [B, channels, ceil(L / hop)]."""
        return self._project(self.dft(audio), self.long_dft(audio) if hasattr(self, "long_dft") else None)

    def step(self, audio: Tensor, state: dict) -> Tensor:
        magnitude = self.dft.step(audio, state)
        long_magnitude = self.long_dft.step(audio, state) if hasattr(self, "long_dft") else None
        if not magnitude.shape[-1]:
            return magnitude.new_zeros(magnitude.shape[0], self.proj.get_weight().shape[0], 0)
        return self._project(magnitude, long_magnitude)
