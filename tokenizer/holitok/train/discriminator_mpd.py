"""Multi-period discriminator (HiFi-GAN/BigVGAN): 2-D convs over the waveform folded by each period."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

from .conv_stack import run_conv_stack


@dataclass
class MPDConfig:
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    # Every conv but the last strides by ``stride`` along time; the last keeps the resolution (HiFi-GAN layout).
    channels: list[int] = field(default_factory=lambda: [32, 128, 512, 1024, 1024])
    kernel_size: int = 5
    stride: int = 3
    leaky_slope: float = 0.1


class PeriodDiscriminator(torch.nn.Module):
    """Folds [B, 1, L] into [B, 1, L/p, p] and scores it; returns (logits [B, N], feature maps)."""

    def __init__(self, period: int, config: MPDConfig):
        super().__init__()
        self.period, self.leaky_slope = period, config.leaky_slope
        pad = (config.kernel_size - 1) // 2
        in_channels = [1] + config.channels[:-1]
        strides = [config.stride] * (len(config.channels) - 1) + [1]
        self.convs = torch.nn.ModuleList(
            weight_norm(torch.nn.Conv2d(c_in, c_out, (config.kernel_size, 1), (s, 1), padding=(pad, 0)))
            for c_in, c_out, s in zip(in_channels, config.channels, strides)
        )
        self.conv_post = weight_norm(torch.nn.Conv2d(config.channels[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch, channels, length = audio.shape
        remainder = length % self.period
        if remainder:
            pad = self.period - remainder
            audio = F.pad(audio, (0, pad), mode="reflect" if length > pad else "constant")
        x = audio.view(batch, channels, -1, self.period)
        return run_conv_stack(x, self.convs, self.conv_post, self.leaky_slope, [])


class MultiPeriodDiscriminator(torch.nn.Module):
    """One :class:`PeriodDiscriminator` per period."""

    def __init__(self, config: MPDConfig | None = None):
        super().__init__()
        config = config or MPDConfig()
        self.discriminators = torch.nn.ModuleList(PeriodDiscriminator(p, config) for p in config.periods)

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outputs = [d(audio) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]
