"""Stage III distillation heads: latents -> WavLM frames (cosine, time-interpolated) and -> x-vector (cosine)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .teachers import TeacherTargets


class FrameDistillHead(torch.nn.Module):
    """Prediction head [B, D, T] -> [B, H_teacher, T]: a small conv stack (context of a few latent frames)."""

    def __init__(self, latent_dim: int, hidden: int, teacher_dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(latent_dim, hidden, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv1d(hidden, hidden, 3, padding=1), torch.nn.GELU(),
            torch.nn.Conv1d(hidden, teacher_dim, 1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents)


class UtteranceDistillHead(torch.nn.Module):
    """Mean + standard-deviation pooling over valid frames, then an MLP to the x-vector dimension."""

    def __init__(self, latent_dim: int, hidden: int, xvector_dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(2 * latent_dim, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, xvector_dim))

    def forward(self, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        count = mask.sum(-1).clamp(min=1)
        mean = (latents * mask).sum(-1) / count
        var = (((latents - mean[..., None]) * mask) ** 2).sum(-1) / count
        return self.net(torch.cat([mean, torch.sqrt(var + 1e-5)], dim=-1))


def frame_distill_loss(prediction: torch.Tensor, frame_lengths: torch.Tensor, targets: TeacherTargets) -> torch.Tensor:
    """Mean over items of mean over valid teacher frames of 1 - cos(pred, teacher).

    Each item's valid prediction frames are linearly interpolated to its own number of teacher frames (25 Hz
    latents vs 50 Hz WavLM), so padding never leaks into the alignment.
    """
    losses = []
    for row in range(prediction.shape[0]):
        pred = prediction[row:row + 1, :, :int(frame_lengths[row])]
        n_teacher = int(targets.frame_lengths[row])
        pred = F.interpolate(pred, size=n_teacher, mode="linear", align_corners=False)[0].transpose(0, 1)
        teacher = targets.frames[row, :n_teacher]
        losses.append((1 - F.cosine_similarity(pred, teacher, dim=-1)).mean())
    return torch.stack(losses).mean()


def utterance_distill_loss(prediction: torch.Tensor, targets: TeacherTargets) -> torch.Tensor:
    return (1 - F.cosine_similarity(prediction, targets.xvector, dim=-1)).mean()
