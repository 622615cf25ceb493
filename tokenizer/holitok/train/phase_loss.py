"""Phase-derivative STFT loss: the reconstruction's phase advance over time and over frequency must match the target's.

Why: a mel (magnitude) loss says nothing direct about phase, and the CPU demo's inverse-STFT head predicts each frame's
phase itself; with the mel loss alone its harmonics come out incoherent (breathy audio, PESQ-WB ~1.2,
docs/learning.md). The absolute phase of a frame is not something a 25 Hz latent can know, but its derivatives can be:
the phase advance from one frame to the next (instantaneous frequency) and from one bin to the next (group delay, i.e.
where in the frame the energy sits). Both are compared as unit phasors, ``|u_pred - u_target| = 2|sin(delta / 2)|``,
which wraps by itself, is bounded by 2 and smooth near zero; each bin pair is weighted by the target's magnitude there,
so silent bins (whose phase is noise) do not count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class PhaseLossConfig:
    """One STFT per window length (Hann, hop = window // 4); ``weight_power`` shapes how much louder bins count."""

    window_lengths: list[int] = field(default_factory=lambda: [512, 2048])
    weight_power: float = 0.5  # weight = (|X_a| |X_b|) ** (power / 2): 0.5 ~ square-root magnitude
    eps: float = 1e-4  # relative to the largest bin of each spectrogram, keeps a near-zero prediction's phasor bounded

    def __post_init__(self):
        if not self.window_lengths or any(w < 8 for w in self.window_lengths):
            raise ValueError(f"phase_loss.window_lengths must be a non-empty list of sizes >= 8, got {self.window_lengths}")


def _unit_products(spec: torch.Tensor, dim: int, eps: torch.Tensor) -> torch.Tensor:
    """Unit phasors of S_k * conj(S_{k-1}) along ``dim`` (their angle is the wrapped phase difference)."""
    n = spec.shape[dim]
    product = spec.narrow(dim, 1, n - 1) * spec.narrow(dim, 0, n - 1).conj()
    return product / (product.abs() + eps)


class PhaseDerivativeLoss(torch.nn.Module):
    def __init__(self, config: PhaseLossConfig | None = None):
        super().__init__()
        self.config = config or PhaseLossConfig()
        for window in self.config.window_lengths:
            self.register_buffer(f"window_{window}", torch.hann_window(window), persistent=False)

    def _stft(self, audio: torch.Tensor, window: int) -> torch.Tensor:
        audio = audio.reshape(-1, audio.shape[-1]).float()
        pad_mode = "reflect" if audio.shape[-1] > window // 2 else "constant"
        return torch.stft(audio, window, window // 4, window=getattr(self, f"window_{window}"), center=True,
                          pad_mode=pad_mode, return_complex=True)  # [B, bins, frames]

    def _scale(self, prediction: torch.Tensor, target: torch.Tensor, window: int) -> torch.Tensor:
        pred, true = self._stft(prediction, window), self._stft(target, window)
        peak = true.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)
        pred_peak = pred.detach().abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-8)
        # Each spectrogram's floor is relative to its own peak (the products are of two bins), so a gain is invisible.
        eps, pred_eps = (peak * self.config.eps) ** 2, (pred_peak * self.config.eps) ** 2
        power = self.config.weight_power / 2
        terms = []
        for dim in (2, 1):  # over time (instantaneous frequency), over frequency (group delay)
            true_units = _unit_products(true, dim, eps)
            pred_units = _unit_products(pred, dim, pred_eps)
            n = true.shape[dim]
            weight = (true.narrow(dim, 1, n - 1).abs() * true.narrow(dim, 0, n - 1).abs() / peak ** 2) ** power
            error = (pred_units - true_units).abs()
            terms.append((weight * error).sum() / weight.sum().clamp_min(1e-8))
        return torch.stack(terms).mean()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B, 1, L] each -> mean over scales and both derivatives of the magnitude-weighted phasor distance (0..2)."""
        if prediction.shape != target.shape:
            raise ValueError(f"phase loss needs equal shapes, got prediction {tuple(prediction.shape)} "
                             f"and target {tuple(target.shape)}")
        return torch.stack([self._scale(prediction, target, w) for w in self.config.window_lengths]).mean()
