"""PatchEncoder (Base input path): one patch of normalised latents -> one LLM input embedding."""
from __future__ import annotations

import torch
from torch import nn

from ..config import PatchEncoderConfig
from .layers import TransformerBlock


class PatchEncoder(nn.Module):
    """Bidirectional transformer over [summary token, frame_1..frame_P]; the summary token's output is projected.

    A learned summary token (instead of mean pooling) lets the encoder weigh frames, and padded frames of a
    last, partial patch are excluded from attention by `frame_mask`.
    """

    def __init__(self, cfg: PatchEncoderConfig, latent_dim: int, patch_size: int, output_size: int):
        super().__init__()
        self.in_proj = nn.Linear(latent_dim, cfg.hidden_size)
        self.summary_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.position = nn.Parameter(torch.zeros(1, patch_size + 1, cfg.hidden_size))
        self.layers = nn.ModuleList(
            TransformerBlock(cfg.hidden_size, cfg.num_heads, cfg.ffn_hidden_size) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, output_size)
        nn.init.normal_(self.summary_token, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, patches: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """patches [M, P, D] (normalised latents), frame_mask [M, P] bool -> [M, output_size]."""
        x = self.in_proj(patches)
        x = torch.cat([self.summary_token.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        key_mask = None
        if frame_mask is not None:
            key_mask = torch.cat([frame_mask.new_ones(frame_mask.shape[0], 1), frame_mask.bool()], dim=1)
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.out_proj(self.norm(x[:, 0]))
