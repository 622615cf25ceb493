"""Left-padded batching of per-item prefix embeddings for cached (and uncached) autoregressive decoding."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LeftPaddedBatch:
    """embeds [B, L, H], attention_mask [B, L] (1 = real), position_ids [B, L] counting real positions only."""

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor

    @classmethod
    def from_items(cls, item_embeds: list[torch.Tensor]) -> "LeftPaddedBatch":
        length = max(e.shape[0] for e in item_embeds)
        first = item_embeds[0]
        embeds = first.new_zeros(len(item_embeds), length, first.shape[-1])
        mask = torch.zeros(len(item_embeds), length, dtype=torch.long, device=first.device)
        for i, e in enumerate(item_embeds):
            embeds[i, length - e.shape[0]:] = e
            mask[i, length - e.shape[0]:] = 1
        return cls(embeds, mask, (mask.cumsum(-1) - 1).clamp(min=0))

    def append(self, step_embeds: torch.Tensor) -> "LeftPaddedBatch":
        """Adds one real position per item: step_embeds [B, H]."""
        mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(self.attention_mask.shape[0], 1)], 1)
        positions = torch.cat([self.position_ids, self.position_ids[:, -1:] + 1], 1)
        return LeftPaddedBatch(torch.cat([self.embeds, step_embeds[:, None]], 1), mask, positions)
