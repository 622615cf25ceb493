"""The authors' compatibility surface: `UnifiedTokenizer` (HoliTok + optional semantic module) and config sanitising."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import HoliTokConfig, load_model_config
from .model import HoliTok
from .semantic import SemanticModule

# Flags the authors' runtime forces off: they switch on training-only heads that no released checkpoint carries.
RUNTIME_DISABLED_FLAGS = ("distill_wavlm", "distill_pitch", "distill_intensity", "distill_xvector", "sid_classifier",
                          "use_supervise", "add_fm_noise")


def sanitize_model_config(config: dict[str, Any] | HoliTokConfig) -> dict[str, Any]:
    """A config dict with every training-only flag set to False (what the runtime builds from)."""
    d = load_model_config(config).to_dict() if not isinstance(config, dict) else dict(config)
    for flag in RUNTIME_DISABLED_FLAGS:
        if flag in d:
            d[flag] = False
    return d


class UnifiedTokenizer(torch.nn.Module):
    """`.vocoder` is a HoliTok; `.semantic` a SemanticModule when a semantic checkpoint or feature size is given."""

    def __init__(self, config: Any = "HoliTok-Unite", checkpoint: str | Path | int | None = None, *,
                 semantic_checkpoint: str | Path | None = None, semantic_feature_dim: int | None = None,
                 device: str | torch.device | None = None, **load_kwargs) -> None:
        super().__init__()
        if isinstance(checkpoint, int):  # the authors' signature takes an int here as the semantic feature size
            semantic_feature_dim, checkpoint = checkpoint, None
        self.vocoder = HoliTok.from_pretrained(config, checkpoint, device=device, **load_kwargs)
        self.semantic = None
        if semantic_checkpoint is not None:
            self.semantic = SemanticModule.from_pretrained(semantic_checkpoint, device=device)
            if semantic_feature_dim is not None and self.semantic.hidden_size != semantic_feature_dim:
                raise ValueError(f"semantic checkpoint has {self.semantic.hidden_size}-d features, "
                                 f"semantic_feature_dim={semantic_feature_dim}")
        elif semantic_feature_dim is not None:
            raise ValueError("semantic_feature_dim needs semantic_checkpoint=PATH (the features come from its weights)")

    @torch.no_grad()
    def extract_latents(self, audio: Any, do_sample: bool = False, **kwargs) -> Tensor:
        return self.vocoder.encode(audio, sample=do_sample, **kwargs)

    def extract_vq_latents(self, *args, **kwargs):
        raise NotImplementedError("the VQ path was never released")

    @torch.no_grad()
    def inference_from_latents(self, latents: Tensor, **kwargs) -> Tensor:
        return self.vocoder.decode(latents, **kwargs)

    @torch.no_grad()
    def extract_semantic_features_from_latents(self, latents: Tensor) -> Tensor:
        """Channel-last latents [B, T, D] -> [B, T, H]."""
        if self.semantic is None:
            raise RuntimeError("no semantic module loaded: pass semantic_checkpoint=PATH")
        return self.semantic(latents)


UnifiedTokenizerWrapper = UnifiedTokenizer
