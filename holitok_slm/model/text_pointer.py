"""TextPointer: the text tokens an audio position should be speaking (a uniform or a forced alignment), as an input embedding."""
from __future__ import annotations

import torch
from torch import nn

ALIGNMENTS = ("uniform", "forced")


def uniform_points(text_lengths: torch.Tensor, positions: torch.Tensor, expected_patches: torch.Tensor) -> torch.Tensor:
    """Where a uniform alignment puts the patch each audio position predicts (its next one), in text tokens: its
    centre's share of the utterance's expected length times the text length. text_lengths [B], positions [B, N]
    (0 = the first audio patch), expected_patches [B, 1] -> points [B, N] (fractional token positions)."""
    lengths = text_lengths.to(positions.device)[:, None].float()
    share = ((positions.float() + 1.5) / expected_patches.float().clamp(min=1)).clamp(0.0, 1.0)
    return share * lengths


def frame_points(before: torch.Tensor, centre: torch.Tensor, after: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The points of a patch's frames [..., P], piecewise linear between the points of the centres of the patch
    before it, its own and the one after it ([...] each; a centre is frame P // 2 of its patch, where
    holitok_slm/layout.py patch_points reads it)."""
    j = torch.arange(patch_size, device=centre.device, dtype=torch.float32)
    half = patch_size // 2
    before, centre, after = (x.float()[..., None] for x in (before, centre, after))
    early = before + (j + patch_size - half) / patch_size * (centre - before)
    late = centre + (j - half) / patch_size * (after - centre)
    return torch.where(j < half, early, late)


class TextPointer(nn.Module):
    """Points each audio position of a TTS utterance at the text it is expected to speak next and adds those tokens'
    embeddings to its input. A point is a fractional token position: the tokens within `radius` of its token (zeros
    past either end of the text) and its offset inside that token go through one linear map. The points come from
    `uniform_points` (training: the item's true length; TTS: the prompt plus the target text at the prompt's speaking
    rate, holitok_slm/infer/tts.py), so the pointer walks through the text at the speaker's pace whatever the model's
    own frames sound like, or from a forced alignment (model.text_pointer_alignment "forced"). The map starts at
    zero, so a model that gains it (fine-tuned from a checkpoint without it) computes what it did before. With
    `out_width` it maps into another width: model.frame_pointer uses it for the flow head's frames (`frame_points`)."""

    def __init__(self, width: int, radius: int = 2, out_width: int | None = None):
        super().__init__()
        if not isinstance(radius, int) or radius < 0:
            raise ValueError(f"text_pointer_radius must be an integer >= 0, got {radius!r}")
        self.radius = radius
        self.proj = nn.Linear((2 * radius + 1) * width + 1, out_width or width)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, text_embeds: torch.Tensor, text_lengths: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """text_embeds [B, Lt, H] (the text's token embeddings, padded), text_lengths [B] (0: no text, e.g. ASR),
        points [B, N] (fractional token positions; NaN reads as 0) -> [B, N, out_width]."""
        batch, count = points.shape
        width = text_embeds.shape[-1]
        if text_embeds.shape[1] == 0:
            raise ValueError("text_embeds needs at least one position (holitok_slm.layout.pad_texts pads to one)")
        lengths = text_lengths.to(points.device)[:, None].float()
        point = torch.nan_to_num(points.float(), nan=0.0).clamp(min=0.0)
        index = torch.minimum(point.floor(), (lengths - 1).clamp(min=0))
        offset = (point - index).clamp(0.0, 1.0)
        window = index.long()[..., None] + torch.arange(-self.radius, self.radius + 1, device=points.device)
        inside = (window >= 0) & (window < lengths.long()[..., None])
        gathered = torch.gather(text_embeds, 1, window.clamp(0, text_embeds.shape[1] - 1).reshape(batch, -1, 1)
                                .expand(-1, -1, width)).view(batch, count, -1, width)
        gathered = gathered * inside[..., None].to(gathered.dtype)
        features = torch.cat([gathered.flatten(-2), offset[..., None].to(gathered.dtype)], dim=-1)
        return self.proj(features) * (lengths > 0)[..., None].to(gathered.dtype)
