"""ProgressEmbedding: an audio position's share of its utterance -> an LLM input embedding (tiny presets only)."""
from __future__ import annotations

import math

import torch
from torch import nn


class ProgressEmbedding(nn.Module):
    """share = position / expected audio positions (0 at the first patch, 1 at the utterance's end) as Fourier features
    through one linear map, added to each audio position's input embedding: how far through the text the model should
    be, known without recognising its own audio. In training the expected length is the item's true length; in TTS it
    is the prompt plus the target text at the prompt's speaking rate (holitok_slm/infer/tts.py). The map starts at
    zero, so a model that gains it (e.g. fine-tuned from a checkpoint without it) computes what it did before."""

    def __init__(self, output_size: int, frequencies: int = 8):
        super().__init__()
        self.register_buffer("frequencies", torch.arange(1, frequencies + 1) * math.pi, persistent=False)
        self.proj = nn.Linear(2 * frequencies + 1, output_size)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, share: torch.Tensor) -> torch.Tensor:
        """share [...] -> [..., output_size]."""
        angles = share[..., None].float() * self.frequencies
        return self.proj(torch.cat([share[..., None].float(), angles.sin(), angles.cos()], dim=-1))
