"""Pitch supervision: a small head that reads F0 from the latents, and its loss against the tracker (pitch_track.py).

Why: the cpu-small tokenizers trained on the mel loss alone (and with Stage III's text supervision) kept no pitch
in their latents: a probe from the latents predicts F0 no better than each speaker's mean F0 (docs/learning.md
section 31), so the decoder averages over pitches and renders smeared, flat harmonics. `loss_weights.pitch` adds
the error of this head (L1 on log2 F0 where the audio is voiced, plus the voicing cross-entropy) to the stage's
loss, so the encoder has to keep F0 where the head can read it. Training-only: nothing here is in a saved HoliTok.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..pitch_track import REFERENCE_LOG2_F0, PitchTrack


class PitchHead(torch.nn.Module):
    """Latents [B, D, T] -> [B, 2, T]: log2 F0 relative to 150 Hz and a voicing logit, from +-2 frames of context.

    Small on purpose: the pitch must be readable from the latents, not inferred by a large network.
    """

    def __init__(self, latent_dim: int, hidden: int = 128):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv1d(latent_dim, hidden, 3, padding=1), torch.nn.GELU(),
                                       torch.nn.Conv1d(hidden, hidden, 3, padding=1), torch.nn.GELU(),
                                       torch.nn.Conv1d(hidden, 2, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def pitch_loss(prediction: torch.Tensor, track: PitchTrack, mask: torch.Tensor) -> torch.Tensor:
    """L1 in octaves on the voiced frames + binary cross-entropy of the voicing on every valid frame.

    `mask` [B, T] marks valid frames; the track may be a frame shorter than the latents (a partial last frame).
    """
    frames = min(prediction.shape[-1], track.voiced.shape[-1])
    prediction, mask = prediction[..., :frames], mask[:, :frames].float()
    voiced = track.voiced[:, :frames].float() * mask
    error = (prediction[:, 0] + REFERENCE_LOG2_F0 - track.log2_f0[:, :frames]).abs()
    octaves = (error * voiced).sum() / voiced.sum().clamp(min=1.0)
    voicing = F.binary_cross_entropy_with_logits(prediction[:, 1], voiced, reduction="none")
    return octaves + (voicing * mask).sum() / mask.sum().clamp(min=1.0)
