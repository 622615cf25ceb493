"""Windowed-sinc low-pass filters and integer-factor decimation in torch (no torchaudio)."""

from __future__ import annotations


import torch
import torch.nn.functional as F


def kaiser_sinc_lowpass(cutoff: float, num_taps: int, beta: float = 8.0) -> torch.Tensor:
    """Linear-phase FIR low-pass; ``cutoff`` is a fraction of the Nyquist frequency (0, 1]. Returns [num_taps], sum 1."""
    if not 0.0 < cutoff <= 1.0:
        raise ValueError(f"cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff}")
    if num_taps < 3 or num_taps % 2 == 0:
        raise ValueError(f"num_taps must be odd and >= 3 so the filter has an integer delay, got {num_taps}")
    centre = (num_taps - 1) / 2
    t = torch.arange(num_taps, dtype=torch.float64) - centre
    taps = cutoff * torch.sinc(cutoff * t) * torch.kaiser_window(num_taps, periodic=False, beta=beta, dtype=torch.float64)
    return (taps / taps.sum()).float()


class Decimator(torch.nn.Module):
    """Anti-aliased down-sampling by an integer factor: zero-phase FIR low-pass, then keep every ``factor``-th sample.

    Output length is ``ceil(L / factor)``; sample ``n`` of the output is aligned with input sample ``n * factor``.
    """

    def __init__(self, factor: int, taps_per_factor: int = 32, rolloff: float = 0.95):
        super().__init__()
        if factor < 1:
            raise ValueError(f"decimation factor must be >= 1, got {factor}")
        self.factor = factor
        num_taps = taps_per_factor * factor + 1
        self.register_buffer("taps", kaiser_sinc_lowpass(rolloff / factor, num_taps).view(1, 1, -1), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [..., L] -> [..., ceil(L / factor)]."""
        if self.factor == 1:
            return audio
        shape = audio.shape
        flat = audio.reshape(-1, 1, shape[-1]).float()
        pad = self.taps.shape[-1] // 2
        out = F.conv1d(F.pad(flat, (pad, pad)), self.taps, stride=self.factor)
        return out.reshape(*shape[:-1], out.shape[-1])

