"""GAN objectives: least-squares adversarial losses for both players and discriminator feature matching."""

from __future__ import annotations

import torch

from .discriminators import DiscriminatorOutput


def discriminator_loss(output: DiscriminatorOutput) -> torch.Tensor:
    """LSGAN: sum over sub-discriminators of mean((1 - D(real))^2) + mean(D(fake)^2)."""
    terms = [torch.mean((1 - r) ** 2) + torch.mean(g ** 2) for r, g in zip(output.real_logits, output.fake_logits)]
    return torch.stack(terms).sum()


def generator_adversarial_loss(output: DiscriminatorOutput) -> torch.Tensor:
    """LSGAN generator side: sum over sub-discriminators of mean((1 - D(fake))^2)."""
    return torch.stack([torch.mean((1 - g) ** 2) for g in output.fake_logits]).sum()


def feature_matching_loss(output: DiscriminatorOutput) -> torch.Tensor:
    """Sum over sub-discriminators and layers of mean |f_real - f_fake|; real features are treated as constants."""
    terms = [
        torch.mean(torch.abs(real.detach() - fake))
        for real_maps, fake_maps in zip(output.real_features, output.fake_features)
        for real, fake in zip(real_maps, fake_maps)
    ]
    return torch.stack(terms).sum()
