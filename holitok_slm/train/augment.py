"""Training-time augmentation of ASR items: spans of latent frames masked (SpecAugment's time masking, on latents).

Why: a small model trained on a few thousand sentences learns to recite them (docs/learning.md section 5: training
text loss 0.05, held-out WER 31 %); hiding spans of the audio forces it to read the rest and lean less on a memorised
sentence. Masked frames take the item's mean latent (per dimension), a neutral value of the right scale. TTS items are
never touched: their latents are the targets. The draws come from torch's global generator, which training
checkpoints save per rank, so a resumed run masks exactly as an uninterrupted one.
"""
from __future__ import annotations

import torch


def mask_asr_spans(items: list[dict], ratio: float, span: int) -> list[dict]:
    """Masks about ``ratio`` of each ASR item's frames in spans of 1..``span`` frames; returns new item dicts (the
    store's tensors are left as they were). ``ratio`` 0 returns ``items`` unchanged."""
    if ratio <= 0:
        return items
    if not 0 < ratio < 1 or span < 1:
        raise ValueError(f"asr time masking needs 0 <= ratio < 1 and span >= 1, got ratio={ratio}, span={span}")
    out = []
    for item in items:
        if item["task"] != "asr":
            out.append(item)
            continue
        latents = item["latents"]  # [T, D]
        frames = latents.shape[0]
        masked = latents.clone()
        fill = latents.mean(dim=0)
        budget = int(round(ratio * frames))
        while budget > 0:
            width = min(budget, int(torch.randint(1, span + 1, ()).item()))
            start = int(torch.randint(0, max(1, frames - width + 1), ()).item())
            masked[start: start + width] = fill
            budget -= width
        out.append({**item, "latents": masked})
    return out
