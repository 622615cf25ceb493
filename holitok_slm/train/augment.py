"""Training-time augmentation: ASR items' latent spans masked (SpecAugment's time masking); TTS items' text dropped.

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


def drop_tts_text(items: list[dict], share: float) -> list[dict]:
    """Marks about ``share`` of the TTS items ``text_dropped`` (holitok_slm/layout.py lays them out with an empty
    text): the text-free branch of generation.text_cfg_strength. ``share`` 0 returns ``items`` unchanged; the draws
    come from torch's global generator, like the masking above."""
    if share <= 0:
        return items
    if not share < 1:
        raise ValueError(f"flow.text_dropout must be in [0, 1), got {share}")
    return [{**item, "text_dropped": True} if item["task"] == "tts" and torch.rand(()).item() < share else item
            for item in items]
