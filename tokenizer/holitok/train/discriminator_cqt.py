"""Multi-scale sub-band CQT discriminator (BigVGAN-v2 idea): per-octave input convs over a complex CQT, then 2-D convs."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch.nn.utils.parametrizations import weight_norm

from .conv_stack import run_conv_stack
from .cqt import ConstantQTransform


@dataclass
class CQTDConfig:
    """One sub-discriminator per (hop, octaves, bins-per-octave) triple; the three lists must have equal length."""

    hop_lengths: list[int] = field(default_factory=lambda: [512, 256, 256])
    n_octaves: list[int] = field(default_factory=lambda: [9, 9, 9])
    bins_per_octave: list[int] = field(default_factory=lambda: [24, 36, 48])
    fmin: float = 32.70
    filter_scale: float = 1.0
    channels: int = 128
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4])
    leaky_slope: float = 0.1

    def __post_init__(self):
        if not len(self.hop_lengths) == len(self.n_octaves) == len(self.bins_per_octave):
            raise ValueError("discriminator.cqt hop_lengths, n_octaves and bins_per_octave must have equal lengths, "
                             f"got {self.hop_lengths}, {self.n_octaves}, {self.bins_per_octave}")


class SubbandCQTDiscriminator(torch.nn.Module):
    """CQT [B, 2, F, T] -> each octave through its own conv -> shared dilated 2-D conv stack striding over frequency."""

    def __init__(self, sample_rate: int, hop_length: int, n_octaves: int, bins_per_octave: int, config: CQTDConfig):
        super().__init__()
        self.leaky_slope, self.bins_per_octave = config.leaky_slope, bins_per_octave
        self.cqt = ConstantQTransform(sample_rate, hop_length, n_octaves, bins_per_octave, config.fmin,
                                      config.filter_scale)
        width = config.channels
        # Separate input convs per octave: each octave of a CQT has its own time resolution and level statistics.
        self.band_convs = torch.nn.ModuleList(
            weight_norm(torch.nn.Conv2d(2, width, (3, 9), padding=(1, 4))) for _ in range(n_octaves)
        )
        self.convs = torch.nn.ModuleList(
            weight_norm(torch.nn.Conv2d(width, width, (3, 9), stride=(2, 1), dilation=(1, d), padding=(1, 4 * d)))
            for d in config.dilations
        )
        self.convs.append(weight_norm(torch.nn.Conv2d(width, width, (3, 3), padding=(1, 1))))
        self.conv_post = weight_norm(torch.nn.Conv2d(width, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spectrum = self.cqt(audio)
        bands = spectrum.split(self.bins_per_octave, dim=2)
        x = torch.cat([conv(band) for conv, band in zip(self.band_convs, bands)], dim=2)
        return run_conv_stack(x, self.convs, self.conv_post, self.leaky_slope, [x])


class MultiScaleSubbandCQTDiscriminator(torch.nn.Module):
    def __init__(self, sample_rate: int, config: CQTDConfig | None = None):
        super().__init__()
        config = config or CQTDConfig()
        self.discriminators = torch.nn.ModuleList(
            SubbandCQTDiscriminator(sample_rate, hop, octaves, bins, config)
            for hop, octaves, bins in zip(config.hop_lengths, config.n_octaves, config.bins_per_octave)
        )

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        outputs = [d(audio) for d in self.discriminators]
        return [o[0] for o in outputs], [o[1] for o in outputs]
