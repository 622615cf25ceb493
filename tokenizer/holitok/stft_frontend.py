"""Causal short-time spectrum front end for the encoder: waveform -> log-magnitude frames -> learned projection.

Not part of the released HoliTok models (their encoder starts with a waveform conv stem). It exists for the small
CPU presets (`config.encoder_frontend = "stft"`): a tiny time-domain encoder has to discover spectral analysis from
scratch and, trained for minutes, only learns loudness (docs/learning.md); a fixed windowed DFT gives it the spectrum
on the first step. The DFT is a strided conv with a fixed kernel, so it is causal (frame j ends at sample j * hop)
and streams through the same machinery as every other conv.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Conv1d, stream_conv1d

# log|X| of speech at ordinary levels lies in about [-9, 0] with the window normalised to unit sum: centred, scaled.
LOG_OFFSET, LOG_SCALE, POWER_FLOOR = 5.0, 1.0 / 3.0, 1e-8


class STFTFrontend(nn.Module):
    def __init__(self, n_fft: int, hop: int, channels: int) -> None:
        super().__init__()
        if n_fft < hop:
            raise ValueError(f"stft front end needs n_fft >= hop, got n_fft={n_fft}, hop={hop}")
        self.n_fft, self.hop, self.bins = n_fft, hop, n_fft // 2 + 1
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        window = window / window.sum()
        t = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(self.bins, dtype=torch.float64)[:, None]
        # Oldest sample first, so that tap n_fft - 1 multiplies the newest sample of the frame.
        basis = torch.cat([torch.cos(2 * math.pi * k * t / n_fft), -torch.sin(2 * math.pi * k * t / n_fft)]) * window
        self.register_buffer("basis", basis[:, None, :].float(), persistent=False)
        self.proj = Conv1d(self.bins, channels, 1)

    def _log_magnitude(self, spec: Tensor) -> Tensor:
        real, imag = spec.chunk(2, dim=1)
        power = real.square() + imag.square()
        return (0.5 * torch.log(power + POWER_FLOOR) + LOG_OFFSET) * LOG_SCALE

    def forward(self, audio: Tensor) -> Tensor:
        """[B, 1, L] -> [B, channels, ceil(L / hop)]."""
        spec = F.conv1d(F.pad(audio, (self.n_fft - 1, 0)), self.basis, stride=self.hop)
        return self.proj(self._log_magnitude(spec))

    def step(self, audio: Tensor, state: dict) -> Tensor:
        spec = stream_conv1d(self, audio, state, self.basis, None, stride=self.hop, dilation=1, groups=1,
                             pad_left=self.n_fft - 1)
        return self.proj(self._log_magnitude(spec)) if spec.shape[-1] else spec.new_zeros(
            spec.shape[0], self.proj.get_weight().shape[0], 0)
