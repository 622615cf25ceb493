"""Qwen2 backbone wrapper: built from a config or loaded from a local HF dir; audio enters as inputs_embeds."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM, StaticCache

from ..config import BackboneConfig

_SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "max_position_embeddings", "rope_theta", "rms_norm_eps",
                 "tie_word_embeddings", "vocab_size")


def _rope_theta(config: Qwen2Config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 1e6)))


class Backbone(nn.Module):
    """Causal LM over mixed text/audio embeddings; returns final (normed) hidden states and an optional KV cache."""

    def __init__(self, cfg: BackboneConfig, vocab_size: int):
        super().__init__()
        if cfg.pretrained_path:
            path = Path(cfg.pretrained_path)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"backbone.pretrained_path {path} is not a Hugging Face model directory")
            self.lm = Qwen2ForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                       attn_implementation=cfg.attn_implementation)
            if self.lm.config.vocab_size < vocab_size:
                self.lm.resize_token_embeddings(vocab_size)
            # Record the loaded shape so a saved checkpoint rebuilds without the original directory.
            for name in _SHAPE_FIELDS:
                setattr(cfg, name, _rope_theta(self.lm.config) if name == "rope_theta" else getattr(self.lm.config, name))
            cfg.pretrained_path = None
        else:
            if cfg.vocab_size is not None and cfg.vocab_size < vocab_size:
                raise ValueError(f"backbone.vocab_size {cfg.vocab_size} is smaller than the text tokenizer "
                                 f"({vocab_size} ids incl. special tokens); raise it or set it to null")
            cfg.vocab_size = cfg.vocab_size or -(-vocab_size // 64) * 64
            config = Qwen2Config(
                vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
                rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings,
                use_cache=True)
            config._attn_implementation = cfg.attn_implementation
            self.lm = Qwen2ForCausalLM(config)
        if cfg.gradient_checkpointing:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    @property
    def hidden_size(self) -> int:
        return self.lm.config.hidden_size

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(input_ids)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(hidden)

    def new_cache(self, static_length: int | None = None) -> DynamicCache | StaticCache:
        """A growing cache, or with `static_length` one preallocated for that many positions: fixed shapes, which is
        what CUDA graphs and `torch.compile(mode="reduce-overhead")` need on GPUs."""
        if static_length is None:
            return DynamicCache(config=self.lm.config)
        return StaticCache(config=self.lm.config, max_cache_len=static_length)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                past_key_values: DynamicCache | None = None) -> torch.Tensor:
        """inputs_embeds [B, L, H]; attention_mask [B, past + L] (1 = real); position_ids [B, L] -> hidden [B, L, H]."""
        out = self.lm.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, use_cache=past_key_values is not None)
        return out.last_hidden_state
