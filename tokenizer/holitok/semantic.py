"""Causal semantic Transformer of HoliTok-Unite: latents [B,T,D] -> features [B,T,H], streamable with a KV cache."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_semantic, save_safetensors_dir
from .config import SemanticConfig


class SemanticSelfAttention(nn.Module):
    """Multi-head attention, q/k/v without bias, o_proj with bias, no positional encoding of any kind."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(hidden, hidden, bias=False)
        self.k_proj = nn.Linear(hidden, hidden, bias=False)
        self.v_proj = nn.Linear(hidden, hidden, bias=False)
        self.o_proj = nn.Linear(hidden, hidden)

    def _split(self, x: Tensor) -> Tensor:
        b, t, h = x.shape
        return x.view(b, t, self.heads, h // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, mask: Tensor | None, cache: dict | None = None) -> Tensor:
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if cache is not None:
            if self in cache:
                past_k, past_v = cache[self]
                k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            cache[self] = (k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        b, _, t, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class SemanticFeedForward(nn.Module):
    def __init__(self, hidden: int, ffn: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn)
        self.fc2 = nn.Linear(ffn, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.silu(self.fc1(x)))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: x += attn(LN(x)); x += ffn(LN(x))."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden)
        self.attn = SemanticSelfAttention(hidden, heads)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.ffn = SemanticFeedForward(hidden, ffn)

    def forward(self, x: Tensor, mask: Tensor | None, cache: dict | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), mask, cache)
        return x + self.ffn(self.ffn_norm(x))


class SemanticEncoder(nn.Module):
    def __init__(self, config: SemanticConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(config.hidden_size, config.num_heads, config.ffn_hidden_size)
                                    for _ in range(config.num_layers))


class SemanticModule(nn.Module):
    """in_proj -> N pre-norm Transformer layers; the output is the last residual stream (no final norm).

    `forward` is differentiable (training, trainable Unite encoder); `step` runs incrementally with a KV cache and
    returns exactly what `forward` returns for those frames.
    """

    def __init__(self, config: SemanticConfig | None = None, **kwargs) -> None:
        super().__init__()
        self.config = config or SemanticConfig(**kwargs)
        c = self.config
        self.in_proj = nn.Linear(c.input_dim, c.hidden_size) if c.use_in_proj else nn.Identity()
        self.encoder = SemanticEncoder(c)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def _mask(self, t_q: int, t_k: int, device: torch.device) -> Tensor | None:
        if not self.config.causal:
            return None
        # Query i (absolute position t_k - t_q + i) sees keys up to and including itself.
        return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)

    def forward(self, latents: Tensor, lengths: Tensor | None = None, channel_last: bool = True) -> Tensor:
        x = latents if channel_last else latents.transpose(1, 2)
        if x.dim() != 3 or x.shape[-1] != self.config.input_dim:
            raise ValueError(f"expected latents [B, T, {self.config.input_dim}] (channel_last={channel_last}), "
                             f"got {tuple(latents.shape)}")
        b, t, _ = x.shape
        mask = self._mask(t, t, x.device)
        if lengths is not None:
            valid = torch.arange(t, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # [B, T]
            key_mask = valid[:, None, None, :]
            if mask is None:
                mask = key_mask
            else:
                # Padded query rows would see no key at all (NaN); let them see themselves, then zero them below.
                mask = (mask[None, None] & key_mask) | torch.eye(t, dtype=torch.bool, device=x.device)
        h = self.in_proj(x)
        for layer in self.encoder.layers:
            h = layer(h, mask)
        if lengths is not None:
            h = h * valid[..., None]
        return h

    def init_cache(self) -> dict:
        if not self.config.causal:
            raise RuntimeError("incremental encoding needs a causal semantic module")
        return {"frames": 0}

    def step(self, latents: Tensor, cache: dict) -> Tensor:
        """Features of the new frames `latents` [B, n, D] given everything fed before through `cache`."""
        n = latents.shape[1]
        if n == 0:
            return latents.new_zeros(latents.shape[0], 0, self.config.hidden_size)
        total = cache["frames"] + n
        mask = self._mask(n, total, latents.device)
        h = self.in_proj(latents)
        for layer in self.encoder.layers:
            h = layer(h, mask, cache)
        cache["frames"] = total
        return h

    # ---- persistence -------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        save_safetensors_dir(self, directory, {"semantic": self.config.to_dict()})

    @classmethod
    def from_pretrained(cls, source: str | Path, *, checkpoint: str | Path | None = None, num_heads: int = 16,
                        causal: bool = True, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None) -> "SemanticModule":
        """Load our safetensors directory, or the authors' `semantic.pt` (heads are not stored: `num_heads`)."""
        model = load_semantic(cls, checkpoint or source, num_heads=num_heads, causal=causal)
        model.eval()
        return model.to(device=device, dtype=dtype) if (device or dtype) else model
