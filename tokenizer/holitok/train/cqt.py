"""Constant-Q transform in torch: one octave of complex filters reused on successively halved signals (CQT-2010 style)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .filters import Decimator


class ConstantQTransform(torch.nn.Module):
    """Complex CQT of [B, 1, L] audio -> [B, 2 (real, imag), n_octaves * bins_per_octave, frames], bins low -> high.

    Only the top octave's filters are built (short kernels at the full rate); each lower octave applies the same
    filters to the signal decimated by 2 once more, which halves their centre frequencies. The hop therefore has to
    be divisible by ``2 ** (n_octaves - 1)``. Filters are Hann-windowed complex exponentials of length
    ``ceil(Q * sr / f)`` with ``Q = filter_scale / (2 ** (1 / bins_per_octave) - 1)``, L1-normalised.
    """

    def __init__(self, sample_rate: int, hop_length: int, n_octaves: int, bins_per_octave: int,
                 fmin: float = 32.70, filter_scale: float = 1.0):
        super().__init__()
        if hop_length % (2 ** (n_octaves - 1)) != 0:
            raise ValueError(f"CQT hop_length {hop_length} must be divisible by 2**(n_octaves-1) = "
                             f"{2 ** (n_octaves - 1)} because each lower octave runs at half the rate")
        top = fmin * 2 ** (n_octaves - 1) * 2 ** ((bins_per_octave - 1) / bins_per_octave)
        if top >= sample_rate / 2:
            raise ValueError(f"CQT top bin {top:.0f} Hz is above Nyquist ({sample_rate / 2:.0f} Hz): lower fmin "
                             "or n_octaves")
        self.hop_length, self.n_octaves, self.bins_per_octave = hop_length, n_octaves, bins_per_octave
        q = filter_scale / (2 ** (1 / bins_per_octave) - 1)
        freqs = fmin * 2 ** (n_octaves - 1) * 2 ** (torch.arange(bins_per_octave, dtype=torch.float64) / bins_per_octave)
        lengths = torch.ceil(q * sample_rate / freqs).long()
        kernel_size = int(lengths.max()) | 1  # odd, so every filter can be centred on a sample
        kernels = torch.zeros(2 * bins_per_octave, 1, kernel_size, dtype=torch.float64)
        for k, (freq, length) in enumerate(zip(freqs.tolist(), lengths.tolist())):
            n = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
            window = torch.hann_window(length, periodic=False, dtype=torch.float64)
            phase = 2 * math.pi * freq * n / sample_rate
            start = (kernel_size - length) // 2
            kernels[k, 0, start:start + length] = window * torch.cos(phase) / window.sum()
            kernels[bins_per_octave + k, 0, start:start + length] = window * torch.sin(phase) / window.sum()
        self.register_buffer("kernels", kernels.float(), persistent=False)
        self.halve = Decimator(2)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        signal = audio.reshape(audio.shape[0], 1, audio.shape[-1]).float()
        pad = self.kernels.shape[-1] // 2
        octaves = []
        for octave in range(self.n_octaves):
            if octave > 0:
                signal = self.halve(signal)
            hop = self.hop_length // 2 ** octave
            response = F.conv1d(F.pad(signal, (pad, pad)), self.kernels, stride=hop)
            octaves.append(response.view(response.shape[0], 2, self.bins_per_octave, -1))
        frames = min(o.shape[-1] for o in octaves)
        # Octave 0 is the highest; reverse so frequency increases along the bin axis.
        return torch.cat([o[..., :frames] for o in reversed(octaves)], dim=2)
