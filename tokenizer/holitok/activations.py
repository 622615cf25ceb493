"""Anti-aliased SnakeBeta activation: causal x2 upsample -> SnakeBeta -> causal x2 lowpass downsample."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import fused_activation
from .layers import stream_conv1d, stream_conv_transpose1d

FILTER_TAPS = 12


def kaiser_sinc_filter(cutoff: float = 0.25, half_width: float = 0.3, taps: int = FILTER_TAPS) -> Tensor:
    """Kaiser-windowed sinc lowpass (even length, centred between samples), normalised to unit sum."""
    attenuation = 2.285 * (taps // 2 - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(taps, beta=beta, periodic=False, dtype=torch.float64)
    t = torch.arange(-taps // 2, taps // 2, dtype=torch.float64) + 0.5
    f = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
    return (f / f.sum()).to(torch.float32)


class SnakeBeta(nn.Module):
    """x + sin^2(x * e^alpha) / e^beta, per channel, parameters stored as logs (log-scale SnakeBeta)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha.exp()[None, :, None]
        inv_beta = 1.0 / (self.beta.exp()[None, :, None] + 1e-9)
        return torch.addcmul(x, torch.sin(x * alpha).square(), inv_beta)  # one fewer pass over x than x + b * s


class _Filtered(nn.Module):
    """Holds one 12-tap filter: a fixed buffer [1,1,12] shared by all channels, or a learnable [C,1,12] parameter."""

    def __init__(self, channels: int, learnable: bool) -> None:
        super().__init__()
        base = kaiser_sinc_filter().view(1, 1, FILTER_TAPS)
        if learnable:
            self.filter = nn.Parameter(base.repeat(channels, 1, 1))
        else:
            self.register_buffer("filter", base)

    def depthwise(self, channels: int) -> Tensor:
        return self.filter.expand(channels, 1, FILTER_TAPS)


class UpSample(_Filtered):
    """x2 causal upsampling: zero-stuffing transposed conv with the lowpass, gain 2, future overlap dropped."""

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        y = 2 * F.conv_transpose1d(x, self.depthwise(c), stride=2, groups=c)
        return y[..., : 2 * x.shape[-1]]

    def step(self, x: Tensor, state: dict) -> Tensor:
        c = x.shape[1]
        return 2 * stream_conv_transpose1d(self, x, state, self.depthwise(c), None, stride=2, groups=c)


class LowPassDownSample(_Filtered):
    """The lowpass of a x2 causal downsampling (the key `downsample.lowpass.filter`)."""


class DownSample(nn.Module):
    """x2 causal downsampling: replicate-pad the left by 11 (only at the true start), lowpass, stride 2."""

    def __init__(self, channels: int, learnable: bool) -> None:
        super().__init__()
        self.lowpass = LowPassDownSample(channels, learnable)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        x = F.pad(x, (FILTER_TAPS - 1, 0), mode="replicate")
        return F.conv1d(x, self.lowpass.depthwise(c), stride=2, groups=c)

    def step(self, x: Tensor, state: dict) -> Tensor:
        c = x.shape[1]
        return stream_conv1d(self, x, state, self.lowpass.depthwise(c), None, stride=2, dilation=1, groups=c,
                             pad_left=FILTER_TAPS - 1, replicate=True)


class Activation1d(nn.Module):
    """SnakeBeta evaluated at twice the sample rate to keep its harmonics from aliasing.

    Inference on CPU runs the same function as one fused kernel (`fused_activation.py`); training runs the modules.
    """

    def __init__(self, channels: int, learnable_filters: bool = False) -> None:
        super().__init__()
        self.act = SnakeBeta(channels)
        self.upsample = UpSample(channels, learnable_filters)
        self.downsample = DownSample(channels, learnable_filters)

    def _fused(self, x: Tensor, history):
        return fused_activation.run(x, self.upsample.filter, self.downsample.lowpass.filter, self.act.alpha,
                                    self.act.beta, history)

    def forward(self, x: Tensor) -> Tensor:
        if fused_activation.usable(x, *self.parameters()):
            return self._fused(x, None)[0]
        return self.downsample(self.act(self.upsample(x)))

    def step(self, x: Tensor, state: dict) -> Tensor:
        if self in state or fused_activation.usable(x, *self.parameters()):  # a stream keeps the path it began on
            out, state[self] = self._fused(x, state.get(self))
            return out
        return self.downsample.step(self.act(self.upsample.step(x, state)), state)
