"""Euler flow-matching sampler for one latent patch: sway-sampled time grid, batched CFG, temperature."""
from __future__ import annotations

import math

import torch

from ..model.dit_head import DiTHead


def sway_timesteps(steps: int, sway_coef: float, device: torch.device | None = None) -> torch.Tensor:
    """steps + 1 times from 0 (noise) to 1 (data); sway_coef < 0 spends more steps near the noise end (F5-TTS)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(0, 1, steps + 1, device=device)
    if sway_coef:
        t = t + sway_coef * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


@torch.no_grad()
def sample_patch(dit: DiTHead, condition: torch.Tensor, history: torch.Tensor, noise: torch.Tensor, steps: int = 10,
                 cfg_strength: float = 2.0, sway_coef: float = -1.0) -> torch.Tensor:
    """Integrates dx/dt = v(x, t) from `noise` (already scaled by the temperature) to a normalised latent patch.

    condition [B, H_dit] (bridge output), history [B, P, D] (previous patch, normalised), noise [B, P, D].
    """
    times = sway_timesteps(steps, sway_coef, noise.device)
    x = noise
    for i in range(steps):
        t = times[i].expand(x.shape[0])
        velocity = dit.guided_velocity(x, t, condition, history, cfg_strength)
        x = x + (times[i + 1] - times[i]) * velocity
    return x
