"""Builds the tiny unified model (configs/unified/model_tiny.yaml + sentencepiece trained on given texts)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .config import UnifiedConfig, load_unified_config
from .model.unified import UnifiedModel
from .text_tokenizer import train_sentencepiece

TINY_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "unified" / "model_tiny.yaml"


def tiny_config(audio_input: str = "patch", semantic_trainable: bool = True) -> UnifiedConfig:
    cfg = load_unified_config(TINY_CONFIG)
    cfg.audio_input = audio_input
    cfg.semantic_input.trainable = semantic_trainable
    return cfg


def build_tiny_model(texts: Iterable[str], workdir: str | Path, cfg: UnifiedConfig | None = None) -> UnifiedModel:
    """Trains a sentencepiece tokenizer on `texts` into `workdir/spm.model` and builds the model around it."""
    cfg = cfg or tiny_config()
    cfg.text_tokenizer.kind, cfg.text_tokenizer.path = "sentencepiece", str(Path(workdir) / "spm.model")
    return UnifiedModel(cfg, train_sentencepiece(texts, cfg.text_tokenizer.path))


def randomize_heads(model: UnifiedModel, seed: int = 0, std: float = 0.05) -> UnifiedModel:
    """Untrained DiT and stop heads are zero-initialised (constant outputs); random weights make the outputs of a
    tiny test model depend on its input, so comparisons between code paths mean something. Returns it in eval mode."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in list(model.dit.parameters()) + list(model.stop_head.parameters()):
            p.normal_(0, std)
    return model.eval()
