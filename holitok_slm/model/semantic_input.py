"""Unite input path: HoliTok's causal semantic encoder -> mean-pool per patch -> linear map into the LLM width."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..config import SemanticInputConfig


def build_semantic_encoder(cfg: SemanticInputConfig, latent_dim: int) -> nn.Module:
    """holitok.SemanticModule from a checkpoint path, or from `cfg.encoder` (SemanticConfig keyword arguments)."""
    from holitok import SemanticConfig, SemanticModule

    if cfg.encoder_path:
        encoder = SemanticModule.from_pretrained(cfg.encoder_path)
        encoder_config = getattr(encoder, "config", None)
        if dataclasses.is_dataclass(encoder_config):
            # Saved checkpoints then rebuild the encoder from the config alone.
            cfg.encoder = dataclasses.asdict(encoder_config)
            cfg.encoder_path = None
    else:
        kwargs: dict[str, Any] = {"input_dim": latent_dim, "hidden_size": cfg.feature_dim, **cfg.encoder}
        encoder = SemanticModule(SemanticConfig(**kwargs))
    return encoder


class SemanticInput(nn.Module):
    """Features of raw latents from the causal semantic encoder, mean-pooled over each patch, then projected.

    The encoder is causal, so the feature of patch k depends only on frames up to the end of patch k: the same
    features are produced by one full pass (training) and by `step` with its KV cache (generation).
    With `trainable=False` the encoder is frozen (no gradients, always in eval mode).
    """

    def __init__(self, cfg: SemanticInputConfig, latent_dim: int, patch_size: int, output_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.trainable = cfg.trainable
        self.encoder = build_semantic_encoder(cfg, latent_dim)
        if self.encoder.config.hidden_size != cfg.feature_dim or self.encoder.config.input_dim != latent_dim:
            raise ValueError(f"semantic encoder maps {self.encoder.config.input_dim}-d latents to "
                             f"{self.encoder.config.hidden_size}-d features, but the model expects {latent_dim} -> "
                             f"{cfg.feature_dim} (semantic_input.feature_dim / latent_dim)")
        if not self.trainable:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        self.norm = nn.LayerNorm(cfg.feature_dim)
        self.proj = nn.Linear(cfg.feature_dim, output_size)

    def train(self, mode: bool = True) -> "SemanticInput":
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()
        return self

    def encode(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Raw latents [B, T, D] -> semantic features [B, T, H]."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return self.encoder(latents, lengths=lengths)

    def pool_project(self, features: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """features [B, N*P, H], frame_mask [B, N*P] -> [B, N, output]; padded frames are left out of the mean."""
        batch, frames, width = features.shape
        weights = frame_mask.to(features.dtype).view(batch, frames // self.patch_size, self.patch_size, 1)
        pooled = (features.view(batch, -1, self.patch_size, width) * weights).sum(2) / weights.sum(2).clamp(min=1)
        return self.proj(self.norm(pooled))

    def init_cache(self):
        return self.encoder.init_cache()

    def step(self, patch: torch.Tensor, cache) -> torch.Tensor:
        """One new patch of raw latents [B, P, D] through the encoder's KV cache -> [B, output]."""
        with torch.no_grad():
            features = self.encoder.step(patch, cache)
        mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        return self.pool_project(features, mask)[:, 0]
