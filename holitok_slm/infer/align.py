"""Forced alignment by CTC (the unified model's own or a CTCAligner's): how far into its transcript each latent frame is."""
from __future__ import annotations

import torch

from .. import layout
from ..model.unified import UnifiedModel


class AlignmentError(ValueError):
    """A transcript that cannot be aligned to its audio (more tokens than CTC steps, or no trained CTC)."""


def ctc_viterbi(log_probs: torch.Tensor, labels: list[int], blank: int) -> torch.Tensor:
    """The most likely CTC path of `labels` through log_probs [S, V]: for each step, the index of the label it emits
    or, on a blank, of the last label emitted before it (-1 before the first). Raises AlignmentError when the labels
    need more steps than there are (a label repeated back to back needs a blank between)."""
    steps = log_probs.shape[0]
    needed = len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))
    if needed > steps:
        raise AlignmentError(f"{len(labels)} tokens need {needed} CTC steps; the audio has {steps}")
    if not labels:
        return torch.full((steps,), -1, dtype=torch.long)
    extended = torch.full((2 * len(labels) + 1,), blank, dtype=torch.long)
    extended[1::2] = torch.tensor(labels, dtype=torch.long)
    states = extended.shape[0]
    emit = log_probs.float()[:, extended]                        # [S, states]
    # a label state may skip the blank before it unless it repeats the label two states back
    skip = torch.zeros(states, dtype=torch.bool)
    skip[3::2] = extended[3::2] != extended[1:-2:2]
    score = torch.full((states,), float("-inf"))
    score[:2] = emit[0, :2]
    back = torch.zeros(steps, states, dtype=torch.long)
    index = torch.arange(states)
    for t in range(1, steps):
        stay = score
        step = torch.cat([score.new_full((1,), float("-inf")), score[:-1]])
        jump = torch.where(skip, torch.cat([score.new_full((2,), float("-inf")), score[:-2]]), float("-inf"))
        best = torch.stack([stay, step, jump])                   # [3, states]
        choice = best.argmax(0)
        score = best.gather(0, choice[None])[0] + emit[t]
        back[t] = index - choice
    end = states - 1 if score[-1] >= score[-2] else states - 2
    path = torch.empty(steps, dtype=torch.long)
    path[-1] = end
    for t in range(steps - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return (path - 1).div(2, rounding_mode="floor")              # state 2k+1 -> k, blank 2k -> k - 1


def points_from_path(path: torch.Tensor, count: int) -> torch.Tensor:
    """A CTC path (`ctc_viterbi`) of `count` labels -> the fractional label position of every step [S]: label k
    starts where the path first emits it and runs to the next one's start (the last to the end); 0 before the first."""
    steps = path.shape[0]
    points = torch.zeros(steps)
    if count == 0:
        return points
    starts = [int(torch.nonzero(path == k)[0]) for k in range(count)] + [steps]
    for k in range(count):
        span = max(1, starts[k + 1] - starts[k])
        points[starts[k]:starts[k + 1]] = k + torch.arange(starts[k + 1] - starts[k]).float() / span
    return points


def frame_points(log_probs: torch.Tensor, labels: list[int], blank: int, frames: int) -> torch.Tensor:
    """The forced alignment of `labels` through CTC log_probs [S, V] as points per latent frame [frames]: S may be a
    whole multiple of the frames (several CTC steps per frame: a frame takes its first step's point) or the frames a
    whole multiple of S (a step per patch part: each frame takes its step's path)."""
    steps = log_probs.shape[0]
    path = ctc_viterbi(log_probs, labels, blank)
    if steps >= frames:
        return points_from_path(path, len(labels))[::steps // frames][:frames]
    return points_from_path(path.repeat_interleave(-(-frames // steps)), len(labels))[:frames]


@torch.no_grad()
def align_points(model: UnifiedModel, latents: torch.Tensor, text: str) -> torch.Tensor:
    """The forced alignment of `text` to raw latents [T, D]: the fractional position in the text's tokens
    (tokenizer.encode(text.strip()), the tokens a TTS layout speaks) of every frame [T], from the model's ASR CTC
    (flow.asr_ctc_weight > 0) over the ASR layout of the audio. The model is causal: its CTC can write a predictable
    word before it is heard (docs/learning.md section 22); `align_points_with` a CTCAligner cannot."""
    cfg = model.config
    if cfg.flow.asr_ctc_weight <= 0:
        raise AlignmentError("aligning needs a model trained with the ASR CTC (flow.asr_ctc_weight > 0); this one's "
                             "LM head never learnt to spell over the audio")
    tok = model.text_tokenizer
    item = layout.asr_layout(tok, cfg, latents)
    device = model.latent_scale.device
    batch = {k: v.to(device) for k, v in layout.pad_layouts(tok, cfg, [item]).items()}
    was_training = model.training
    model.eval()
    try:
        hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["latents"],
                                     batch["frame_mask"], batch["audio_offset"], batch["num_patches"])
    finally:
        model.train(was_training)
    audio = hidden[:, item.audio_offset:item.audio_offset + item.num_patches]
    log_probs = model.ctc_log_probs(audio)[0].cpu()
    # each CTC step covers patch_size / ctc_steps_per_patch frames
    frames = log_probs.shape[0] * (cfg.patch_size // cfg.flow.ctc_steps_per_patch)
    return frame_points(log_probs, tok.encode(text.strip()), model.ctc_blank_id(), frames)[:latents.shape[0]]


def character_starts(tokenizer, text: str) -> torch.Tensor:
    """Where each of `text`'s tokens starts [n + 1], counted in the non-space characters of the text (the last entry:
    their total). Spaces are left out because tokenizers place them differently (a piece of their own, or the start
    of the next word), while the characters that are written are the same in every tokenization."""
    lengths = [sum(not ch.isspace() for ch in tokenizer.decode([i])) for i in tokenizer.encode(text.strip())]
    return torch.tensor([0] + lengths, dtype=torch.float64).cumsum(0)


def retokenize_points(points: torch.Tensor, text: str, source, target) -> torch.Tensor:
    """Points [T] counting `source` tokenizer's tokens of `text` -> the same instants counting `target`'s: each point
    goes to a character position (linear inside its token) and back into the target token holding that character.
    A target token without written characters (a lone space piece) is passed over at once. Raises AlignmentError
    when the two tokenizers do not write the same characters (different normalisation, unknown characters)."""
    src, dst = character_starts(source, text), character_starts(target, text)
    if src[-1] != dst[-1]:
        raise AlignmentError(f"the aligner's tokenizer writes {int(src[-1])} characters of {text!r}, the model's "
                             f"{int(dst[-1])}: their points cannot be matched")
    p = points.double().clamp(0, len(src) - 1)
    k = p.floor().long().clamp(max=len(src) - 2) if len(src) > 1 else p.long()
    chars = src[k] + (p - k) * (src[(k + 1).clamp(max=len(src) - 1)] - src[k])
    j = (torch.searchsorted(dst, chars, right=True) - 1).clamp(0, len(dst) - 1)
    inside = j < len(dst) - 1
    span = torch.where(inside, dst[(j + 1).clamp(max=len(dst) - 1)] - dst[j], torch.ones_like(chars))
    out = torch.where(inside, j + (chars - dst[j]) / span, (len(dst) - 1) * torch.ones_like(chars))
    # the aligned text ends with the audio: nothing is past the target's last token
    return out.clamp(max=max(len(dst) - 1 - 1e-6, 0)).float()


@torch.no_grad()
def align_points_with(aligner, latents: torch.Tensor, text: str, tokenizer=None) -> torch.Tensor:
    """The same alignment [T] from a CTCAligner (holitok_slm/model/ctc_aligner.py), which reads the whole utterance.
    Its points count `tokenizer`'s tokens (default: the aligner's own): an aligner that spells characters, which
    learns to read much sooner than one over word pieces (docs/learning.md section 23), can time a word-piece model."""
    log_probs = aligner(latents[None].to(aligner.latent_mean.device))[0].cpu()
    points = frame_points(log_probs, aligner.text_tokenizer.encode(text.strip()), aligner.blank, latents.shape[0])
    if tokenizer is None or tokenizer is aligner.text_tokenizer:
        return points
    return retokenize_points(points, text, aligner.text_tokenizer, tokenizer)


def align_for_model(model: UnifiedModel, latents: torch.Tensor, text: str, aligner=None) -> torch.Tensor:
    """A forced-pointer model's alignment [T] of `text` to raw latents, in its own text tokens, by the one rule every
    caller follows: `aligner` when given, else the CTCAligner the model keeps (`model.aligner`: the one that aligned
    its training store), else the model's own ASR CTC."""
    aligner = aligner if aligner is not None else model.aligner
    if aligner is None:
        return align_points(model, latents, text)
    return align_points_with(aligner, latents, text, model.text_tokenizer)
