"""Training-only normalizing flow used in the KL term; never part of the runtime graph or exported checkpoints.

Flow: ``num_couplings`` affine coupling layers over the latent channels, separated by channel reversals. Each
coupling keeps the first half ``a`` of the channels and maps the second half ``b -> b * exp(s(a)) + t(a)``, where
``s, t`` come from a small stack of (non-causal) 1-D convolutions over time, so the flow is sequence-aware. ``s`` is
soft-clipped as ``c * tanh(s / c)``. The Jacobian is triangular, so

    log |det df/dz| = sum over couplings, valid frames and transformed channels of s.

The flow sits on the prior side (as in VITS): a posterior sample ``z ~ q(z|x) = N(mu, sigma^2)`` is what the decoder
sees, and the KL is taken between q and the flow-pushed prior ``p(z) = N(f(z); 0, I) |det df/dz|``:

    KL = E_q[log q(z)] - E_q[log N(f(z); 0, I)] - E_q[log |det df/dz|]
       = sum(-log sigma - 1/2) + E_q[sum f(z)^2 / 2] - E_q[log |det df/dz|]       (log 2 pi cancels)

with the Gaussian entropy in closed form and the other two terms estimated with the reparameterised sample. With
the flow at its identity initialisation this is exactly the usual Gaussian KL against N(0, I) in expectation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LatentFlowConfig:
    num_couplings: int = 4
    hidden_channels: int = 256
    kernel_size: int = 5
    max_log_scale: float = 2.0


class AffineCoupling(torch.nn.Module):
    def __init__(self, channels: int, config: LatentFlowConfig):
        super().__init__()
        if channels < 2:
            raise ValueError(f"the flow needs at least 2 latent channels, got {channels}")
        self.kept = channels // 2
        self.max_log_scale = config.max_log_scale
        pad = config.kernel_size // 2
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(self.kept, config.hidden_channels, config.kernel_size, padding=pad),
            torch.nn.SiLU(),
            torch.nn.Conv1d(config.hidden_channels, config.hidden_channels, config.kernel_size, padding=pad),
            torch.nn.SiLU(),
        )
        self.out = torch.nn.Conv1d(config.hidden_channels, 2 * (channels - self.kept), 1)
        # Zero init makes every coupling the identity, so training starts from the plain Gaussian KL.
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def _scale_shift(self, kept: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_scale, shift = self.out(self.net(kept * mask) * mask).chunk(2, dim=1)
        log_scale = self.max_log_scale * torch.tanh(log_scale / self.max_log_scale)
        return log_scale * mask, shift * mask

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kept, moved = z[:, :self.kept], z[:, self.kept:]
        log_scale, shift = self._scale_shift(kept, mask)
        moved = (moved * torch.exp(log_scale) + shift) * mask
        return torch.cat([kept, moved], dim=1), log_scale.sum(dim=(1, 2))

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        kept, moved = y[:, :self.kept], y[:, self.kept:]
        log_scale, shift = self._scale_shift(kept, mask)
        return torch.cat([kept, (moved - shift) * torch.exp(-log_scale) * mask], dim=1)


class LatentFlow(torch.nn.Module):
    """z [B, D, T] -> (f(z) [B, D, T], log|det df/dz| [B]); ``mask`` [B, 1, T] marks valid frames."""

    def __init__(self, latent_dim: int, config: LatentFlowConfig | None = None):
        super().__init__()
        config = config or LatentFlowConfig()
        self.couplings = torch.nn.ModuleList(AffineCoupling(latent_dim, config) for _ in range(config.num_couplings))

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = z.new_zeros(z.shape[0])
        for coupling in self.couplings:
            z, coupling_logdet = coupling(z, mask)
            logdet = logdet + coupling_logdet
            z = z.flip(1)  # a permutation: |det| = 1, lets the next coupling transform the other half
        return z, logdet

    def inverse(self, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for coupling in reversed(self.couplings):
            y = coupling.inverse(y.flip(1), mask)
        return y


def sample_posterior(mu: torch.Tensor, log_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample ``mu + eps * exp(log_std)`` (the runtime's convention: log_std, not log-variance)."""
    eps = torch.randn_like(mu)
    return mu + eps * torch.exp(log_std), eps


def flow_kl(z: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor, flow: LatentFlow | None) -> torch.Tensor:
    """KL(q || flow-pushed N(0, I)) in nats per latent element (mean over valid frames and channels); see module doc."""
    if flow is None:
        pushed, logdet = z, z.new_zeros(z.shape[0])
    else:
        pushed, logdet = flow(z, mask)
    neg_entropy = ((-log_std - 0.5) * mask).sum()
    cross_entropy = (0.5 * pushed.pow(2) * mask).sum() - logdet.sum()
    count = mask.sum() * z.shape[1]
    return (neg_entropy + cross_entropy) / count.clamp(min=1)
