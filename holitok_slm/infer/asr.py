"""Latent-level ASR: batched greedy decoding with the KV cache and per-item finishing; beam search for one item."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import layout
from ..model.unified import UnifiedModel
from ..text_tokenizer import TEXT_END
from .batching import LeftPaddedBatch
from .inputs import check_positions, check_time, check_whole


def _layout(model: UnifiedModel, latents: torch.Tensor) -> layout.ItemLayout:
    """One utterance's checked ASR layout [task_asr, audio_start, A..A, audio_end]; refuses audio whose layout and
    first transcript token do not fit the backbone's positions."""
    item = layout.asr_layout(model.text_tokenizer, model.config, latents)
    check_positions(model, len(item.ids) + 1, f"Transcribing this audio ({item.num_patches} patches)")
    return item


def _max_new_tokens(model: UnifiedModel, item: layout.ItemLayout, max_new_tokens: int | None) -> int:
    """The given limit, or a generous bound from the audio length; never past the backbone's last position."""
    room = model.config.backbone.max_position_embeddings - len(item.ids)
    if max_new_tokens is not None:
        return min(max_new_tokens, room)
    return min(8 + math.ceil(model.config.generation.asr_max_tokens_per_patch * item.num_patches), room)


@torch.no_grad()
def transcribe_latents(model: UnifiedModel, latents: Sequence[torch.Tensor], max_new_tokens: int | None = None,
                       beam_size: int = 1) -> list[str]:
    """Raw latents [T, D] per utterance -> transcripts. Greedy (batched) or beam search (one item at a time)."""
    if model.text_tokenizer is None:
        raise RuntimeError("ASR needs a model with a text tokenizer")
    beam_size = check_whole(beam_size, "beam_size", minimum=1)
    max_new_tokens = check_whole(max_new_tokens, "max_new_tokens", minimum=0, optional=True)
    if len(latents) == 0:
        return []
    was_training = model.training
    model.eval()
    try:
        if beam_size > 1:
            return [_beam_search(model, item, _max_new_tokens(model, item, max_new_tokens), beam_size)
                    for item in (_layout(model, x) for x in latents)]
        return _greedy(model, [_layout(model, x) for x in latents], max_new_tokens)
    finally:
        model.train(was_training)


def _greedy(model: UnifiedModel, items: list[layout.ItemLayout], max_new_tokens: int | None) -> list[str]:
    tok = model.text_tokenizer
    end_id = tok.id(TEXT_END)
    batch = LeftPaddedBatch.from_items([layout.asr_prefix(model, item) for item in items])
    limits = torch.tensor([_max_new_tokens(model, item, max_new_tokens) for item in items], device=batch.embeds.device)
    cache = model.backbone.new_cache()
    hidden = model.backbone(batch.embeds, batch.attention_mask, batch.position_ids, cache)[:, -1]
    outputs = [[] for _ in items]
    finished = torch.zeros(len(items), dtype=torch.bool, device=hidden.device)
    for step in range(int(limits.max())):
        check_time()
        next_ids = model.backbone.text_logits(hidden).argmax(-1)
        finished |= (next_ids == end_id) | (step >= limits)
        if bool(finished.all()):
            break
        for i in torch.nonzero(~finished).flatten().tolist():
            outputs[i].append(int(next_ids[i]))
        step_embeds = model.backbone.embed(next_ids)
        batch = batch.append(step_embeds)
        hidden = model.backbone(step_embeds[:, None], batch.attention_mask, batch.position_ids[:, -1:], cache)[:, -1]
    return [tok.decode(ids) for ids in outputs]


def _beam_search(model: UnifiedModel, item: layout.ItemLayout, max_new_tokens: int, beam_size: int) -> str:
    """Length-normalised beam search; beams share one batched KV cache that is reordered every step."""
    tok = model.text_tokenizer
    end_id = tok.id(TEXT_END)
    prefix = layout.asr_prefix(model, item)
    batch = LeftPaddedBatch.from_items([prefix] * beam_size)
    cache = model.backbone.new_cache()
    hidden = model.backbone(batch.embeds, batch.attention_mask, batch.position_ids, cache)[:, -1]
    scores = torch.full((beam_size,), -math.inf, device=hidden.device)
    scores[0] = 0.0  # identical beams at the start: expand only the first
    beams: list[list[int]] = [[] for _ in range(beam_size)]
    done: list[tuple[float, list[int]]] = []
    for _ in range(max_new_tokens):
        check_time()
        log_probs = torch.log_softmax(model.backbone.text_logits(hidden).float(), -1)
        candidates = (scores[:, None] + log_probs).flatten()
        top_scores, top_index = candidates.topk(2 * beam_size)
        vocab = log_probs.shape[-1]
        keep_rows, keep_ids, keep_scores = [], [], []
        for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
            row, token = divmod(index, vocab)
            if token == end_id:
                if rank < beam_size:  # a finished hypothesis counts only if it ranks among the live beams
                    done.append((score / (len(beams[row]) + 1), beams[row]))
            elif len(keep_rows) < beam_size:
                keep_rows.append(row), keep_ids.append(token), keep_scores.append(score)
        best_done = max((s for s, _ in done), default=-math.inf)
        # Heuristic stop (like HF early_stopping=False): beam_size finished hypotheses and the best live beam,
        # length-normalised as if it ended next step, already scores below the best finished one.
        best_alive = max(score / (len(beams[row]) + 2) for row, score in zip(keep_rows, keep_scores)) if keep_rows \
            else -math.inf
        if not keep_rows or (len(done) >= beam_size and best_alive < best_done):
            break
        rows = torch.tensor(keep_rows, device=hidden.device)
        cache.reorder_cache(rows)
        beams = [beams[r] + [t] for r, t in zip(keep_rows, keep_ids)]
        scores = torch.tensor(keep_scores, device=hidden.device)
        next_ids = torch.tensor(keep_ids, device=hidden.device)
        step_embeds = model.backbone.embed(next_ids)
        batch = LeftPaddedBatch(batch.embeds[rows], batch.attention_mask[rows], batch.position_ids[rows]).append(step_embeds)
        hidden = model.backbone(step_embeds[:, None], batch.attention_mask, batch.position_ids[:, -1:], cache)[:, -1]
    if not done:
        done = [(s / max(1, len(b)), b) for s, b in zip(scores.tolist(), beams)]
    return tok.decode(max(done, key=lambda pair: pair[0])[1])
