"""Latent-level TTS generation: batched, KV-cached AR loop with per-item EOS, length bounds, and a patch stream."""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field, fields
from typing import Iterator, Sequence

import torch

from .. import layout
from ..config import GenerationDefaults
from ..model.unified import UnifiedModel
from .align import AlignmentError, align_for_model
from .batching import LeftPaddedBatch
from .inputs import InputError, check_number, check_positions, check_text, check_time, check_whole
from ..model.dit_head import sample_patch
from ..model.text_pointer import frame_points
from .euler_sampler import GraphedPatchSampler


@dataclass
class TTSRequest:
    """One utterance to synthesise. prompt_latents: raw HoliTok latents [T, D] of the voice prompt. text_points: for
    a model with a forced text pointer, its points for the first audio positions of the utterance [N], at least
    every prompt patch (e.g. the forced alignment of a true utterance, eval/tts_self_continuation.py); positions past
    them follow the pace head. By default the prompt is aligned to its transcript (holitok_slm/infer/align.py)."""

    text: str
    prompt_latents: torch.Tensor | None = None
    prompt_text: str | None = None
    instruction: str | None = None
    text_points: torch.Tensor | None = None


@dataclass
class TTSOptions(GenerationDefaults):
    """Sampling options; `min_patches`/`max_patches` override the text-length-derived bounds when set;
    `patch_cap` is a hard limit on top of whichever bounds apply (a time budget: both bounds are clipped to it)."""

    min_patches: int | None = None
    max_patches: int | None = None
    patch_cap: int | None = None
    use_cache: bool = True
    # Replay each patch's Euler loop (both CFG branches) from a CUDA graph captured once per batch size and setting:
    # at batch 1 on a GPU the loop is launch-bound (docs/unified_model.md). CUDA only; refused on other devices.
    cuda_graph: bool = False
    # Preallocate the backbone's KV cache for prompt + max_patches (fixed shapes for graphs/compilers on GPUs).
    static_cache: bool = False

    def __post_init__(self) -> None:
        check_options(self.__dict__)

    @classmethod
    def from_model(cls, model: UnifiedModel, **overrides) -> "TTSOptions":
        base = {f.name: getattr(model.config.generation, f.name) for f in fields(GenerationDefaults)}
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown TTS options {unknown}")
        return cls(**{**base, **overrides})


_WHOLE_OPTIONS = {"steps": 1, "max_length_margin_patches": 0, "min_patches": 0, "max_patches": 1, "patch_cap": 1}
_REAL_OPTIONS = {"cfg_strength": None, "text_cfg_strength": 0.0, "sway_coef": None, "temperature": 0.0,
                 "pitch_temperature": 0.0, "eos_threshold": None, "prompt_trailing_silence_db": None,
                 "min_length_ratio": 0.0, "max_length_ratio": 0.0, "asr_max_tokens_per_patch": 0.0}


def check_options(options: dict) -> None:
    """Refuses (InputError) a sampling option of the wrong kind or out of range; None stands for "the default" in
    the optional ones. Front ends call it on their overrides before any work; TTSOptions calls it on itself."""
    optional = {"min_patches", "max_patches", "patch_cap", "prompt_trailing_silence_db"}
    for name, value in options.items():
        if value is None and name in optional:
            continue
        if name in _WHOLE_OPTIONS:
            check_whole(value, name, minimum=_WHOLE_OPTIONS[name])
        elif name in _REAL_OPTIONS:
            check_number(value, name, minimum=_REAL_OPTIONS[name])


def check_request_texts(text, prompt_text=None, instruction=None) -> None:
    """The texts of one TTSRequest: a non-empty text to speak, optional prompt transcript and instruction (InputError
    otherwise). Kept as given: whitespace is the caller's business."""
    check_text(text, "text to speak")
    check_text(prompt_text, "prompt transcript", required=False)
    check_text(instruction, "instruction", required=False)


@dataclass
class TTSResult:
    """Generated raw latents [T, D] (prompt excluded) and whether the stop head ended it (else the length cap)."""

    latents: torch.Tensor
    stopped_by_eos: bool
    length_bounds: tuple[int, int] = field(default=(0, 0))


@dataclass
class _Prepared:
    item_embeds: list[torch.Tensor]
    history: torch.Tensor
    min_patches: torch.Tensor
    max_patches: torch.Tensor
    prompt_latents: list[torch.Tensor]
    semantic_caches: list | None
    prompt_patches: torch.Tensor      # [B] audio positions before the first generated patch
    utterance_patches: torch.Tensor   # [B] expected audio positions of the whole utterance (audio_progress)
    text_ids: torch.Tensor            # [B, Lt] the text each request speaks, prompt transcript included (text_pointer)
    text_lengths: torch.Tensor        # [B]
    text_free_embeds: list[torch.Tensor] | None = None  # the same requests without their text (text_cfg_strength)
    start_points: torch.Tensor | None = None  # [B] forced pointer: the last prompt position's point (0 without one)
    given_points: list[torch.Tensor | None] | None = None  # forced pointer: TTSRequest.text_points, where given
    before_start_points: torch.Tensor | None = None  # [B] forced pointer: the point before start_points (0 without one)


def _target_patches(model: UnifiedModel, request: TTSRequest, prompt_patches: int) -> float:
    """Expected patches of the target text: its tokens at the prompt's speaking rate when the prompt has a
    transcript, else at the model's (patches_per_token, measured on the training data)."""
    tok = model.text_tokenizer
    target_tokens = max(1, len(tok.encode(request.text)))
    rate = float(model.patches_per_token)
    if prompt_patches and request.prompt_text and request.prompt_text.strip():
        rate = prompt_patches / max(1, len(tok.encode(request.prompt_text)))
    return rate * target_tokens


def _utterance_patches(model: UnifiedModel, request: TTSRequest, prompt_patches: int) -> float:
    """The expected length of the whole utterance the model speaks (`audio_progress`): prompt + target text; a
    prompt without transcript is taken as the opening of the text itself (its audio is not added)."""
    target = _target_patches(model, request, prompt_patches)
    if request.prompt_text and request.prompt_text.strip():
        return prompt_patches + target
    return max(target, prompt_patches + 1.0)


def _prompt_points(model: UnifiedModel, request: TTSRequest, item: layout.ItemLayout) -> torch.Tensor:
    """A forced pointer's points of the prompt positions [N]: the request's own, else the prompt's own forced
    alignment to its transcript (which comes first in the text the layout speaks)."""
    if request.text_points is not None:
        points = request.text_points
        if points.dim() != 1 or points.shape[0] < item.num_patches or not bool(torch.isfinite(points).all()):
            raise InputError(f"text_points must be finite, one per audio position ({item.num_patches} prompt "
                             f"patches at least), got shape {tuple(points.shape)}")
        return points.float()
    if not item.num_patches:
        return torch.zeros(0)
    if not (request.prompt_text and request.prompt_text.strip()):
        raise InputError("this model's text pointer follows a forced alignment: a voice prompt needs its transcript "
                         "(prompt_text) to be aligned")
    try:
        frames = align_for_model(model, item.latents, request.prompt_text)
    except AlignmentError as err:
        raise InputError(f"the prompt's transcript cannot be aligned to its audio: {err}") from None
    return layout.patch_points(frames, item.num_patches, model.config.patch_size)


def _length_bounds(model: UnifiedModel, request: TTSRequest, prompt_patches: int, options: TTSOptions) -> tuple[int, int]:
    """Bounds tied to the target text length; the speaking rate comes from the prompt when there is one."""
    expected = _target_patches(model, request, prompt_patches)
    low = options.min_patches if options.min_patches is not None else int(options.min_length_ratio * expected)
    high = options.max_patches if options.max_patches is not None else (
        math.ceil(options.max_length_ratio * expected) + options.max_length_margin_patches)
    low, high = max(0, low), max(1, high, low)
    if options.patch_cap is not None:
        cap = max(1, options.patch_cap)
        low, high = min(low, cap), min(high, cap)
    return low, high


def _prepare(model: UnifiedModel, requests: Sequence[TTSRequest], options: TTSOptions) -> _Prepared:
    """Every request's layout and length bounds are checked before any is embedded."""
    tok, cfg = model.text_tokenizer, model.config
    device = model.latent_scale.device
    layouts, lows, highs = [], [], []
    for request in requests:
        check_request_texts(request.text, request.prompt_text, request.instruction)
        if request.text_points is not None and not model.forced_pointer:
            raise InputError("text_points are read by a forced text pointer (model.text_pointer_alignment "
                             "'forced'); this model has none")
        item = layout.tts_request_layout(tok, cfg, request.text, request.prompt_latents, request.prompt_text,
                                         request.instruction)
        low, high = _length_bounds(model, request, item.num_patches, options)
        check_positions(model, len(item.ids) + high, f"Speaking this text ({item.audio_offset} text tokens, "
                        f"{item.num_patches} prompt patches, up to {high} new patches)")
        layouts.append(item)
        lows.append(low)
        highs.append(high)
    totals = [_utterance_patches(model, request, item.num_patches) for request, item in zip(requests, layouts)]
    pointed = ([_prompt_points(model, request, item) for request, item in zip(requests, layouts)]
               if model.forced_pointer else [None] * len(requests))
    prefixes = [layout.tts_prefix(model, item, total, points)
                for item, total, points in zip(layouts, totals, pointed)]
    caches = [p.semantic_cache for p in prefixes] if model.semantic_input is not None else None
    text_free = None
    if options.text_cfg_strength:
        free_layouts = [layout.text_free_request_layout(tok, cfg, r.prompt_latents, r.instruction) for r in requests]
        text_free = [layout.tts_prefix(model, item, total).embeds for item, total in zip(free_layouts, totals)]
    text_ids, text_lengths = layout.pad_texts(tok, [layout.tts_text(tok, item.ids, item.audio_offset)
                                                    for item in layouts], device)
    start = given = before = None
    if model.forced_pointer:
        start = torch.tensor([float(points[item.num_patches - 1]) if item.num_patches else 0.0
                              for points, item in zip(pointed, layouts)], device=device)
        before = torch.tensor([float(points[item.num_patches - 2]) if item.num_patches > 1 else 0.0
                               for points, item in zip(pointed, layouts)], device=device)
        given = [r.text_points.float().to(device) if r.text_points is not None else None for r in requests]
    return _Prepared([p.embeds for p in prefixes], torch.stack([p.history for p in prefixes]),
                     torch.tensor(lows, device=device), torch.tensor(highs, device=device),
                     [item.latents.to(device) for item in layouts], caches,
                     torch.tensor([item.num_patches for item in layouts], device=device),
                     torch.tensor(totals, device=device), text_ids, text_lengths, text_free, start, given, before)


# How far before the last token's start a forced alignment's last frame sits (measured on 10 items of the demo store:
# 0.05-0.08 tokens for 9 of them, 1.0 for one).
POINTER_END_MARGIN = 0.06


def _next_points(model: UnifiedModel, prep: _Prepared, hidden: torch.Tensor, points: torch.Tensor,
                 step: int) -> torch.Tensor:
    """A forced pointer's points [B] of the patches about to be generated: the request's own (TTSRequest.text_points)
    where it has one for that position, else the pace head's move on from `points` (the positions before them);
    never past where a forced alignment ends: inside the second-to-last token, just before the last one (its last
    token, the sentence's final punctuation, is emitted in the utterance's last CTC step, which the per-frame points
    leave out: holitok_slm/infer/align.py frame_points). Training never showed the model, or its stop head, a pointer
    past that (measured: a pointer left to run to the end of the text never stopped)."""
    moved = torch.minimum(points + model.pace(hidden), (prep.text_lengths.float() - 1 - POINTER_END_MARGIN).clamp(min=0))
    for i, given in enumerate(prep.given_points):
        position = int(prep.prompt_patches[i]) + step
        if given is not None and position < given.shape[0]:
            moved[i] = given[position]
    return moved


@torch.no_grad()
def stream_patches(model: UnifiedModel, requests: Sequence[TTSRequest], options: TTSOptions | None = None,
                   generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields (raw patch [B, P, D], active [B] bool) per AR step until every item has stopped.

    An item stops when the stop probability exceeds `eos_threshold` after its minimum length, or at its
    maximum length. Finished items keep riding along in the batch (their outputs are marked inactive).
    With use_cache=False every step recomputes the backbone (and, for Unite, the semantic encoder) over the
    whole sequence: the reference the cached path must match.
    """
    if model.text_tokenizer is None:
        raise RuntimeError("TTS needs a model with a text tokenizer")
    options = options or TTSOptions.from_model(model)
    was_training = model.training
    model.eval()
    try:
        yield from _run(model, requests, options, generator)
    finally:
        model.train(was_training)


def _run(model, requests, options, generator):
    cfg = model.config
    if options.cuda_graph and next(model.parameters()).device.type != "cuda":
        raise InputError(f"cuda_graph needs the model on a CUDA device; it is on {next(model.parameters()).device}")
    if options.text_cfg_strength and (model.semantic_input is not None or options.cuda_graph):
        raise InputError("text_cfg_strength is implemented for the patch input path without cuda_graph")
    if options.blind_history and model.semantic_input is not None:
        raise InputError("blind_history is implemented for the patch input path")
    prep = _prepare(model, requests, options)
    # With text guidance the batch holds each request twice: as given, then without its text (same audio).
    batch = LeftPaddedBatch.from_items(prep.item_embeds + (prep.text_free_embeds or []))
    size = len(requests)
    device = batch.embeds.device
    static_length = batch.embeds.shape[1] + int(prep.max_patches.max()) + 1 if options.static_cache else None
    cache = model.backbone.new_cache(static_length) if options.use_cache else None
    hidden = model.backbone(batch.embeds, batch.attention_mask, batch.position_ids, cache)[:, -1]
    hidden, text_free_hidden = hidden[:size], hidden[size:]
    history = prep.history if model.flow_reads_history else torch.zeros_like(prep.history)
    points, centre_before = prep.start_points, prep.before_start_points
    generated_raw = [[] for _ in range(size)]
    finished = torch.zeros(size, dtype=torch.bool, device=device)
    noise_scale = model.noise_scale(options.temperature, options.pitch_temperature)
    step = 0
    while True:
        check_time()
        stop_prob = torch.sigmoid(model.stop_head(hidden).float())
        finished |= ((step >= prep.min_patches) & (stop_prob > options.eos_threshold)) | (step >= prep.max_patches)
        if bool(finished.all()):
            return
        frame_text = None
        if model.forced_pointer:
            centre = points  # the point of the patch about to be drawn (its centre); `points` moves on to the next
            points = _next_points(model, prep, hidden, points, step)
            if model.frame_pointer is not None:
                frame_text = model.frame_text(prep.text_ids, prep.text_lengths,
                                              frame_points(centre_before, centre, points, cfg.patch_size))
            centre_before = centre
        noise = torch.randn(size, cfg.patch_size, cfg.latent_dim, generator=generator, device=device) * noise_scale
        condition = model.bridge(hidden)
        if options.cuda_graph:
            patch = graphed_sampler(model, condition, history, options, frame_text)(
                condition, history, noise, frame_text)
        else:
            text_free = model.bridge(text_free_hidden) if options.text_cfg_strength else None
            patch = sample_patch(model.dit, condition, history, noise,
                                 options.steps, options.cfg_strength, options.sway_coef, text_free,
                                 options.text_cfg_strength, frame_text)
        raw = model.denormalize_latents(patch)
        yield raw, ~finished
        step += 1
        if model.flow_reads_history:
            history = patch
        if model.semantic_input is None:  # blind_history: the backbone never reads its own frames
            step_embeds = model.embed_patch(torch.zeros_like(patch) if options.blind_history else patch)
        elif options.use_cache:
            step_embeds = torch.cat([model.semantic_input.step(raw[i:i + 1], prep.semantic_caches[i])
                                     for i in range(size)])
        else:
            step_embeds = _semantic_recompute(model, prep, generated_raw, raw)
        if model.progress is not None:  # the patch just generated sits at audio position prompt + step - 1
            step_embeds = step_embeds + model.progress_embeds(prep.prompt_patches + step - 1,
                                                              prep.utterance_patches).to(step_embeds.dtype)
        text_free_embeds = step_embeds  # the text-free branch (text_cfg_strength) has no text to point at
        if model.pointer is not None:
            pointed = points[:, None] if model.forced_pointer else model.uniform_points(
                prep.text_lengths, (prep.prompt_patches + step - 1)[:, None], prep.utterance_patches[:, None])
            step_embeds = step_embeds + model.pointer_embeds(prep.text_ids, prep.text_lengths,
                                                             pointed)[:, 0].to(step_embeds.dtype)
        if options.text_cfg_strength:
            step_embeds = torch.cat([step_embeds, text_free_embeds])
        batch = batch.append(step_embeds)
        if options.use_cache:
            hidden = model.backbone(step_embeds[:, None], batch.attention_mask, batch.position_ids[:, -1:], cache)[:, -1]
        else:
            hidden = model.backbone(batch.embeds, batch.attention_mask, batch.position_ids)[:, -1]
        hidden, text_free_hidden = hidden[:size], hidden[size:]


_GRAPHED: "weakref.WeakKeyDictionary[UnifiedModel, dict]" = weakref.WeakKeyDictionary()


def graphed_sampler(model: UnifiedModel, condition: torch.Tensor, history: torch.Tensor,
                    options: TTSOptions, frame_text: torch.Tensor | None = None) -> GraphedPatchSampler:
    """The model's captured Euler loop for this batch shape and setting (captured on first use, then reused)."""
    samplers = _GRAPHED.setdefault(model, {})
    key = (tuple(condition.shape), tuple(history.shape), condition.dtype, history.dtype, options.steps,
           options.cfg_strength, options.sway_coef, torch.is_autocast_enabled("cuda"), frame_text is not None)
    if key not in samplers:
        samplers[key] = GraphedPatchSampler(model.dit, condition, history, options.steps, options.cfg_strength,
                                            options.sway_coef, frame_text=frame_text)
    return samplers[key]


def _semantic_recompute(model, prep, generated_raw, raw):
    """Uncached Unite path: re-encode prompt + everything generated so far, keep the newest patch's embedding."""
    out = []
    for i in range(raw.shape[0]):
        generated_raw[i].append(raw[i])
        latents = torch.cat([prep.prompt_latents[i], *generated_raw[i]])[None]
        features = model.semantic_input.encode(latents)
        mask = torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
        out.append(model.semantic_input.pool_project(features, mask)[:, -1])
    return torch.cat(out)


def generate_latents(model: UnifiedModel, requests: Sequence[TTSRequest], options: TTSOptions | None = None,
                     generator: torch.Generator | None = None) -> list[TTSResult]:
    """Batched TTS at the latent level: one TTSResult per request (raw latents, prompt excluded)."""
    options = options or TTSOptions.from_model(model)
    pieces = [[] for _ in requests]
    for patch, active in stream_patches(model, requests, options, generator):
        for i in torch.nonzero(active).flatten().tolist():
            pieces[i].append(patch[i])
    return [tts_result(model, request, patches, options) for request, patches in zip(requests, pieces)]


def tts_result(model: UnifiedModel, request: TTSRequest, patches: Sequence[torch.Tensor],
               options: TTSOptions) -> TTSResult:
    """The TTSResult of one request from the raw patches [P, D] streamed for it (fewer than its maximum length:
    the stop head ended it)."""
    prompt_patches = 0 if request.prompt_latents is None else layout.whole_patch_count(request.prompt_latents.shape[0],
                                                                                       model.config.patch_size)
    bounds = _length_bounds(model, request, prompt_patches, options)
    latents = torch.cat(list(patches)) if patches else model.latent_scale.new_zeros(0, model.config.latent_dim)
    return TTSResult(latents, len(patches) < bounds[1], bounds)
