"""All discriminators behind one module that scores real and generated audio in a single (DDP-friendly) call."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .discriminator_cqt import CQTDConfig, MultiScaleSubbandCQTDiscriminator
from .discriminator_mpd import MPDConfig, MultiPeriodDiscriminator


@dataclass
class DiscriminatorConfig:
    mpd: MPDConfig = field(default_factory=MPDConfig)
    cqt: CQTDConfig = field(default_factory=CQTDConfig)


@dataclass
class DiscriminatorOutput:
    """Per sub-discriminator logits and feature maps, for the real and the generated halves of the batch."""

    real_logits: list[torch.Tensor]
    fake_logits: list[torch.Tensor]
    real_features: list[list[torch.Tensor]]
    fake_features: list[list[torch.Tensor]]


class Discriminators(torch.nn.Module):
    """Multi-period + multi-scale sub-band CQT discriminators.

    ``forward(real, fake)`` runs both halves as one batch so each training step makes exactly one forward and one
    backward call on the (possibly DDP-wrapped) module.
    """

    def __init__(self, sample_rate: int, config: DiscriminatorConfig | None = None):
        super().__init__()
        config = config or DiscriminatorConfig()
        self.mpd = MultiPeriodDiscriminator(config.mpd)
        self.cqtd = MultiScaleSubbandCQTDiscriminator(sample_rate, config.cqt)

    def forward(self, real: torch.Tensor, fake: torch.Tensor) -> DiscriminatorOutput:
        if real.shape != fake.shape:
            raise ValueError(f"real and generated audio must have the same shape, got {tuple(real.shape)} and "
                             f"{tuple(fake.shape)}")
        batch = real.shape[0]
        both = torch.cat([real, fake], dim=0)
        logits, features = [], []
        for family in (self.mpd, self.cqtd):
            family_logits, family_features = family(both)
            logits += family_logits
            features += family_features
        return DiscriminatorOutput(
            real_logits=[l[:batch] for l in logits],
            fake_logits=[l[batch:] for l in logits],
            real_features=[[f[:batch] for f in fs] for fs in features],
            fake_features=[[f[batch:] for f in fs] for fs in features],
        )
