"""Latent-level ASR: batched greedy decoding with the KV cache and per-item finishing; beam search (optionally joint
with the model's CTC prefix score) for one item."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import layout
from ..model.unified import UnifiedModel
from ..text_tokenizer import TEXT_END
from .batching import LeftPaddedBatch
from .ctc_prefix import CTCPrefixScorer
from .inputs import InputError, check_number, check_positions, check_time, check_whole

# Next tokens per beam (under the decoder) that the CTC prefix score is computed for; more costs time, rarely WER.
CTC_PRE_BEAM = 10
# (beams, CTC weight) of the default search for a model trained with the ASR CTC loss: chosen on test items the
# listener report never scores (docs/learning.md section 15); beam 8 or weights 0.3-0.7 were within a point.
JOINT_SEARCH = (4, 0.3)


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


def resolve_search(model: UnifiedModel, beam_size: int | None = None,
                   ctc_weight: float | None = None) -> tuple[int, float]:
    """The checked (beam size, CTC weight) of a search. Not given: the checkpoint's `generation.asr_beam_size` /
    `asr_ctc_weight`; where those are unset (None), JOINT_SEARCH for a model trained with the ASR CTC loss and greedy
    decoding for one without. InputError for values out of range or CTC on a model whose CTC was never trained."""
    gen = model.config.generation
    trained_ctc = model.config.flow.asr_ctc_weight > 0
    if beam_size is None:
        beam_size = gen.asr_beam_size if gen.asr_beam_size is not None else (JOINT_SEARCH[0] if trained_ctc else 1)
    if ctc_weight is None:
        ctc_weight = gen.asr_ctc_weight if gen.asr_ctc_weight is not None else (JOINT_SEARCH[1] if trained_ctc else 0.0)
    beam_size = check_whole(beam_size, "beam_size", minimum=1)
    ctc_weight = check_number(ctc_weight, "ctc_weight", minimum=0)
    if ctc_weight > 1:
        raise InputError(f"ctc_weight must be between 0 and 1, got {ctc_weight:g}")
    if ctc_weight > 0 and not trained_ctc:
        raise InputError("ctc_weight > 0 needs a model trained with the ASR CTC loss (flow.asr_ctc_weight > 0); "
                         "this model's CTC output was never trained")
    return beam_size, ctc_weight


@torch.no_grad()
def transcribe_latents(model: UnifiedModel, latents: Sequence[torch.Tensor], max_new_tokens: int | None = None,
                       beam_size: int | None = None, ctc_weight: float | None = None) -> list[str]:
    """Raw latents [T, D] per utterance -> transcripts. Greedy (batched) or beam search (one item at a time);
    `ctc_weight` > 0 weighs the model's CTC prefix score into the search (joint CTC/attention decoding). Defaults:
    `resolve_search`."""
    if model.text_tokenizer is None:
        raise RuntimeError("ASR needs a model with a text tokenizer")
    beam_size, ctc_weight = resolve_search(model, beam_size, ctc_weight)
    max_new_tokens = check_whole(max_new_tokens, "max_new_tokens", minimum=0, optional=True)
    if len(latents) == 0:
        return []
    was_training = model.training
    model.eval()
    try:
        if beam_size > 1 or ctc_weight > 0:
            return [_beam_search(model, item, _max_new_tokens(model, item, max_new_tokens), beam_size, ctc_weight)
                    for item in (_layout(model, x) for x in latents)]
        return _greedy(model, [_layout(model, x) for x in latents], max_new_tokens)
    finally:
        model.train(was_training)


def _next_token_logits(model: UnifiedModel, hidden: torch.Tensor) -> torch.Tensor:
    """The decoder's logits [B, V] over the ids the text tokenizer has: the backbone's rows past them are padding
    (its vocabulary is rounded up to a multiple of 64) that no transcript holds and no tokenizer can decode."""
    logits = model.backbone.text_logits(hidden)
    logits[..., len(model.text_tokenizer):] = -math.inf
    return logits


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
        next_ids = _next_token_logits(model, hidden).argmax(-1)
        finished |= (next_ids == end_id) | (step >= limits)
        if bool(finished.all()):
            break
        for i in torch.nonzero(~finished).flatten().tolist():
            outputs[i].append(int(next_ids[i]))
        step_embeds = model.backbone.embed(next_ids)
        batch = batch.append(step_embeds)
        hidden = model.backbone(step_embeds[:, None], batch.attention_mask, batch.position_ids[:, -1:], cache)[:, -1]
    return [tok.decode(ids) for ids in outputs]


def _beam_search(model: UnifiedModel, item: layout.ItemLayout, max_new_tokens: int, beam_size: int,
                 ctc_weight: float = 0.0) -> str:
    """Length-normalised beam search; beams share one batched KV cache that is reordered every step. With
    `ctc_weight` w, a hypothesis scores (1 - w) x its log-probability under the decoder + w x its CTC prefix score
    (holitok_slm/infer/ctc_prefix.py), and only each beam's CTC_PRE_BEAM best next tokens under the decoder (and
    the end marker) are scored by CTC."""
    tok = model.text_tokenizer
    end_id = tok.id(TEXT_END)
    prefix = layout.asr_prefix(model, item)
    batch = LeftPaddedBatch.from_items([prefix] * beam_size)
    cache = model.backbone.new_cache()
    states = model.backbone(batch.embeds, batch.attention_mask, batch.position_ids, cache)
    hidden = states[:, -1]
    ctc = ctc_state = None
    if ctc_weight > 0:
        audio = states[:1, item.audio_offset:item.audio_offset + item.num_patches]
        ctc = CTCPrefixScorer(model.ctc_log_probs(audio)[0].cpu(), blank=model.ctc_blank_id())
        ctc_state = ctc.initial().select(torch.zeros(beam_size, dtype=torch.long))
    decoder_scores = torch.zeros(beam_size, dtype=torch.float64)
    scores = torch.full((beam_size,), -math.inf, dtype=torch.float64)
    scores[0] = 0.0  # identical beams at the start: expand only the first
    beams: list[list[int]] = [[] for _ in range(beam_size)]
    done: list[tuple[float, list[int]]] = []
    for _ in range(max_new_tokens):
        check_time()
        log_probs = torch.log_softmax(_next_token_logits(model, hidden).double(), -1).cpu()
        if ctc is None:
            candidate_ids = torch.arange(log_probs.shape[-1]).expand_as(log_probs)
            decoder_next = scores[:, None] + log_probs
            candidate_scores = decoder_next
        else:
            candidate_ids, decoder_next, extended, candidate_scores = _joint_candidates(
                ctc, ctc_state, log_probs, decoder_scores, end_id, beam_size, ctc_weight)
            candidate_scores = torch.where(torch.isfinite(scores)[:, None], candidate_scores, -math.inf)
        width = candidate_ids.shape[1]
        top_scores, top_index = candidate_scores.flatten().topk(2 * beam_size)
        keep_rows, keep_ids, keep_scores, keep_flat = [], [], [], []
        for rank, (score, index) in enumerate(zip(top_scores.tolist(), top_index.tolist())):
            row, column = divmod(index, width)
            token = int(candidate_ids[row, column])
            if token == end_id:
                if rank < beam_size:  # a finished hypothesis counts only if it ranks among the live beams
                    done.append((score / (len(beams[row]) + 1), beams[row]))
            elif len(keep_rows) < beam_size and math.isfinite(score):
                keep_rows.append(row), keep_ids.append(token), keep_scores.append(score), keep_flat.append(index)
        best_done = max((s for s, _ in done), default=-math.inf)
        # Heuristic stop (like HF early_stopping=False): beam_size finished hypotheses and the best live beam,
        # length-normalised as if it ended next step, already scores below the best finished one.
        best_alive = max(score / (len(beams[row]) + 2) for row, score in zip(keep_rows, keep_scores)) if keep_rows \
            else -math.inf
        if not keep_rows or (len(done) >= beam_size and best_alive < best_done):
            break
        # Fewer live candidates than beams (a tiny vocabulary under CTC): repeat the last one as a dead beam.
        pad = beam_size - len(keep_rows)
        keep_rows += keep_rows[-1:] * pad
        keep_ids += keep_ids[-1:] * pad
        keep_flat += keep_flat[-1:] * pad
        keep_scores += [-math.inf] * pad
        rows = torch.tensor(keep_rows, device=hidden.device)
        cache.reorder_cache(rows)
        beams = [beams[r] + [t] for r, t in zip(keep_rows, keep_ids)]
        scores = torch.tensor(keep_scores, dtype=torch.float64)
        decoder_scores = decoder_next.flatten()[keep_flat]
        if ctc is not None:
            ctc_state = extended.select(torch.tensor(keep_flat))
        next_ids = torch.tensor(keep_ids, device=hidden.device)
        step_embeds = model.backbone.embed(next_ids)
        batch = LeftPaddedBatch(batch.embeds[rows], batch.attention_mask[rows], batch.position_ids[rows]).append(step_embeds)
        hidden = model.backbone(step_embeds[:, None], batch.attention_mask, batch.position_ids[:, -1:], cache)[:, -1]
    if not done:
        done = [(s / max(1, len(b)), b) for s, b in zip(scores.tolist(), beams) if math.isfinite(s)]
    return tok.decode(max(done, key=lambda pair: pair[0])[1])


def _joint_candidates(ctc: CTCPrefixScorer, ctc_state, log_probs: torch.Tensor, decoder_scores: torch.Tensor,
                      end_id: int, beam_size: int, ctc_weight: float):
    """Each beam's CTC_PRE_BEAM best next tokens under the decoder plus the end marker -> (candidate ids [N, K],
    their decoder totals [N, K], the extended CTC states (rows of the first K - 1 columns, row-major over [N, K-1]),
    joint scores [N, K])."""
    masked = log_probs.clone()
    masked[:, end_id] = -math.inf
    masked[:, ctc.blank] = -math.inf  # the blank never stands in a transcript
    # Never more than the tokens left to choose from (not the end marker, the blank or the backbone's padding rows).
    pre_beam = min(max(CTC_PRE_BEAM, 2 * beam_size), int(torch.isfinite(masked).sum(-1).min()))
    labels = masked.topk(pre_beam, dim=-1).indices                          # [N, P]
    extended = ctc.extend(ctc_state, labels)
    ids = torch.cat([labels, torch.full((labels.shape[0], 1), end_id)], 1)  # [N, P + 1]
    decoder_next = decoder_scores[:, None] + log_probs.gather(1, ids)
    ctc_scores = torch.cat([extended.score.view(labels.shape), ctc.final(ctc_state)[:, None]], 1)
    joint = (1 - ctc_weight) * decoder_next + ctc_weight * ctc_scores
    # Rows of `extended` are [N, P] row-major; pad an end column so a flat index of [N, P + 1] maps to it.
    extended = _pad_end_column(extended, labels.shape)
    return ids, decoder_next, extended, joint


def _pad_end_column(state, shape):
    """Extended states [N*P] -> [N*(P+1)] with a copy in each end column (never selected: an end finishes the
    hypothesis), so flat indices of the joint score matrix select rows directly."""
    n, p = shape
    index = torch.arange(n * p).view(n, p)
    index = torch.cat([index, index[:, -1:]], 1).flatten()
    return state.select(index)
