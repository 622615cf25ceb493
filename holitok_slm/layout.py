"""The sequence layout of the unified model, in one place: prompt templates, the whole-patch rule, latent checks, and
the builders of a training batch, a TTS prefix and an ASR prefix, which training, TTS and ASR all go through.

The paper's Table 5 (symbolic templates) is blank in our copy, so these templates are our design. Layouts, with
`A` = one audio patch embedding (the token id there is <|audio_pad|>, replaced by the audio embedding):

    TTS                 <|task_tts|> text <|audio_start|> A A A ... A
    controllable TTS    <|task_tts|> <|instruct_start|> instruction <|instruct_end|> text <|audio_start|> A ... A
    ASR                 <|task_asr|> <|audio_start|> A A ... A <|audio_end|> transcript <|text_end|>

Why:
- A leading task tag tells the shared backbone which direction the sequence runs before it sees any
  content; TTS and ASR sequences otherwise both contain text and audio and would be ambiguous at the start.
- TTS puts all text before the audio (no interleaving): the LLM sees the full sentence before the first
  patch, which is what the paper's TTS factorisation conditions on, and zero-shot cloning becomes plain
  continuation: text = prompt transcript + target text, audio = prompt patches, then the model continues.
  Training on whole utterances trains continuing an utterance's own opening; a prompt from another recording adds a
  sentence boundary and a two-sentence text, which `data.tts_prompt_share` trains by laying out some items after
  another utterance of their speaker (`join_prompt_item`, the same layout cloning reads).
- The hidden state at <|audio_start|> conditions the first patch; the hidden state at patch k conditions
  patch k+1; the hidden state at the last patch is trained to fire the stop head. No <|audio_end|> token is
  generated in TTS, because stopping is the binary EOS head's job (paper Eq. 12). The DiT also sees the
  previous patch (clean) as history; the first patch's history is zeros.
- The instruction of controllable TTS sits between its own delimiters before the text, so a model trained
  without instructions sees the same text/audio layout (fine-tuning only adds a prefix), and the
  instruction can never be confused with words to be spoken.
- ASR closes the audio with <|audio_end|>, the point where the LM head starts predicting the transcript,
  and ends it with <|text_end|> so greedy decoding knows when to stop. Only the transcript and
  <|text_end|> carry the text loss.
- Whole patches in TTS: generation only ever produces whole patches, so a TTS item's trailing partial patch
  (< 160 ms, normally silence) is dropped, in training and in a voice prompt alike, rather than padded with
  frames the model could never produce (a padded last patch once made the stop head miss at inference). ASR
  keeps every frame: its last patch may be partial (masked inside the PatchEncoder / the mean pooling).

One item's layout is an `ItemLayout` (token ids, where its audio positions start, how many, the frames behind
them); `collate` pads items' layouts into a training batch, and `tts_prefix` / `asr_prefix` embed one layout as
the context that generation continues. The model (holitok_slm.model.unified) supplies the embeddings only.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .config import UnifiedConfig
from .text_tokenizer import (
    AUDIO_END, AUDIO_PAD, AUDIO_START, INSTRUCT_END, INSTRUCT_START, PAD, TASK_ASR, TASK_TTS, TEXT_END, TextTokenizer,
)

if TYPE_CHECKING:  # annotations only: the model imports this module
    from .model.unified import UnifiedModel


# ---- prompt templates ------------------------------------------------------------------------------------------------
def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_prompt_and_target_text(prompt_text: str, text: str) -> str:
    """Joins the prompt transcript and the target text as one utterance would be written."""
    prompt_text, text = prompt_text.strip(), text.strip()
    if not prompt_text:
        return text
    if not text:
        return prompt_text
    separator = "" if _is_cjk(prompt_text[-1]) or _is_cjk(text[0]) else " "
    return prompt_text + separator + text


def tts_prefix_ids(tokenizer: TextTokenizer, text: str, instruction: str | None = None) -> list[int]:
    """Token ids before the first audio patch of a TTS sequence; ends with <|audio_start|>."""
    ids = [tokenizer.id(TASK_TTS)]
    if instruction:
        ids += [tokenizer.id(INSTRUCT_START), *tokenizer.encode(instruction.strip()), tokenizer.id(INSTRUCT_END)]
    ids += tokenizer.encode(text.strip())
    ids.append(tokenizer.id(AUDIO_START))
    return ids


def asr_prefix_ids(tokenizer: TextTokenizer) -> list[int]:
    """Token ids before the audio of an ASR sequence."""
    return [tokenizer.id(TASK_ASR), tokenizer.id(AUDIO_START)]


def asr_suffix_ids(tokenizer: TextTokenizer) -> list[int]:
    """Token ids right after the audio of an ASR sequence; the transcript follows."""
    return [tokenizer.id(AUDIO_END)]


def asr_target_ids(tokenizer: TextTokenizer, transcript: str) -> list[int]:
    """Transcript ids plus the end marker: the positions that carry the text loss."""
    return [*tokenizer.encode(transcript.strip()), tokenizer.id(TEXT_END)]


# ---- latents ---------------------------------------------------------------------------------------------------------
def check_latents(latents: Any, latent_dim: int, what: str) -> torch.Tensor:
    """Raw latents must be a non-empty, finite [T, latent_dim] tensor (ValueError naming `what` otherwise);
    returns them as float32."""
    if not isinstance(latents, torch.Tensor) or latents.dim() != 2 or latents.shape[1] != latent_dim:
        shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
        raise ValueError(f"{what} must be a [T, {latent_dim}] tensor, got {shape}")
    if latents.shape[0] == 0:
        raise ValueError(f"{what} have no frames")
    if not torch.isfinite(latents).all():
        raise ValueError(f"{what} contain NaN or inf")
    return latents.float()


def whole_patches(latents: torch.Tensor, patch_size: int, what: str | None = None) -> torch.Tensor:
    """The whole-patch rule of TTS audio: drops a trailing partial patch. Audio shorter than one patch has nothing
    to keep: it is refused (ValueError naming `what`) when `what` is given (a voice prompt), else kept as it is
    (a training item, which then trains one partial patch)."""
    whole = whole_patch_count(latents.shape[0], patch_size) * patch_size
    if whole:
        return latents[:whole]
    if what is None:
        return latents
    raise ValueError(f"{what} is shorter than one patch ({patch_size} latent frames)")


def whole_patch_count(frames: int, patch_size: int) -> int:
    """Whole patches in `frames` latent frames: the audio positions of TTS audio after `whole_patches`."""
    return frames // patch_size


def num_patches(frames: int, patch_size: int) -> int:
    """Audio positions taken by `frames` latent frames: one per patch, a partial last one included."""
    return math.ceil(frames / patch_size)


# ---- one item's layout -----------------------------------------------------------------------------------------------
@dataclass
class ItemLayout:
    """One sequence: token ids (<|audio_pad|> at the audio positions), where its audio starts and how many patches
    it has, the raw latents [T, D] behind those positions, and, for ASR training, the text labels `target` (the
    transcript and <|text_end|>; the sequence holds all but the last, each label sits one position before its
    token). `spoken`: the ids of the words the audio says (the TTS text, the ASR transcript), which the auxiliary
    CTC losses spell over the audio positions. `points`: the item's forced alignment [T] (per frame, the fractional
    position in `spoken` it has reached; data_prep/align_latents.py), for a model whose text pointer reads it."""

    task: str
    ids: list[int]
    audio_offset: int
    num_patches: int
    latents: torch.Tensor
    target: list[int] = field(default_factory=list)
    spoken: list[int] = field(default_factory=list)
    points: torch.Tensor | None = None

    @property
    def audio_positions(self) -> range:
        return range(self.audio_offset, self.audio_offset + self.num_patches)


def tts_layout(tok: TextTokenizer, cfg: UnifiedConfig, text: str, latents: torch.Tensor | None,
               instruction: str | None = None) -> ItemLayout:
    """TTS text (+ instruction) followed by one position per patch of `latents` (already cut to whole patches;
    None: no audio yet, the layout generation starts from without a voice prompt)."""
    latents = latents if latents is not None else torch.zeros(0, cfg.latent_dim)
    count = num_patches(latents.shape[0], cfg.patch_size)
    prefix = tts_prefix_ids(tok, text, instruction)
    return ItemLayout("tts", prefix + [tok.id(AUDIO_PAD)] * count, len(prefix), count, latents,
                      spoken=tok.encode(text.strip()))


def asr_layout(tok: TextTokenizer, cfg: UnifiedConfig, latents: Any, transcript: str | None = None,
               what: str = "ASR latents") -> ItemLayout:
    """ASR markers around one position per patch of `latents` (checked; every frame kept); with `transcript`
    (training) the sequence continues with it and `target` holds its labels, without it the layout ends at
    <|audio_end|>, where transcription starts."""
    latents = check_latents(latents, cfg.latent_dim, what)
    count = num_patches(latents.shape[0], cfg.patch_size)
    prefix = asr_prefix_ids(tok)
    ids = prefix + [tok.id(AUDIO_PAD)] * count + asr_suffix_ids(tok)
    target = asr_target_ids(tok, transcript) if transcript is not None else []
    return ItemLayout("asr", ids + target[:-1], len(prefix), count, latents, target, spoken=target[:-1])


def training_layout(tok: TextTokenizer, cfg: UnifiedConfig, item: dict[str, Any]) -> ItemLayout:
    """A training item (dict: id, task, text, latents [T, D], optional instruction; a TTS item marked
    `text_dropped` is laid out with an empty text: flow.text_dropout; a TTS item with a `prompt` item of the same
    speaker follows it: `join_prompt_item`) -> its layout (ValueError naming the item for a bad one)."""
    name = item.get("id", "<no id>")
    if item.get("task") not in ("tts", "asr"):
        raise ValueError(f"item {name}: task must be 'tts' or 'asr', got {item.get('task')!r}")
    if not isinstance(item.get("text"), str) or not item["text"].strip():
        raise ValueError(f"item {name}: empty or missing text")
    what = f"item {name}: latents"
    if item["task"] == "asr":
        return asr_layout(tok, cfg, item.get("latents"), item["text"], what)
    if item.get("prompt") is not None:
        item = join_prompt_item(tok, cfg, item)
    latents = whole_patches(check_latents(item.get("latents"), cfg.latent_dim, what), cfg.patch_size)
    out = tts_layout(tok, cfg, "" if item.get("text_dropped") else item["text"], latents, item.get("instruction"))
    points = item.get("text_points")
    if points is not None:
        if points.dim() != 1 or points.shape[0] < out.latents.shape[0]:
            raise ValueError(f"item {name}: text_points {tuple(points.shape)} do not cover its {out.latents.shape[0]} "
                             "frames")
        out.points = points
    return out


def join_prompt_item(tok: TextTokenizer, cfg: UnifiedConfig, item: dict[str, Any]) -> dict[str, Any]:
    """A TTS training item and its `prompt` (another utterance, data.tts_prompt_share) -> one item laid out as zero-shot
    cloning reads a voice prompt (`tts_request_layout`): the prompt's transcript joined before the text, its audio cut
    to whole patches before the item's audio, and (forced alignment) its points, then the item's shifted by where the
    item's text starts in the joined text. A prompt shorter than one patch is left out."""
    prompt, name = item["prompt"], item.get("id", "<no id>")
    rest = {k: v for k, v in item.items() if k != "prompt"}
    opening = whole_patches(check_latents(prompt.get("latents"), cfg.latent_dim, f"item {name}: prompt latents"),
                            cfg.patch_size)
    if not isinstance(prompt.get("text"), str) or not prompt["text"].strip() or \
            whole_patch_count(opening.shape[0], cfg.patch_size) == 0:
        return rest
    text = join_prompt_and_target_text(prompt["text"], item["text"])
    out = {**rest, "text": text, "latents": torch.cat([opening, item["latents"].float()])}
    if item.get("text_points") is not None:
        if prompt.get("text_points") is None or prompt["text_points"].shape[0] < opening.shape[0]:
            raise ValueError(f"item {name}: its prompt has no forced alignment covering its audio")
        # The item's text ends the joined text, so it starts this many tokens in (sub-word merges at the seam stay in
        # the prompt's part).
        offset = len(tok.encode(text)) - len(tok.encode(item["text"].strip()))
        out["text_points"] = torch.cat([prompt["text_points"][:opening.shape[0]].float(),
                                        item["text_points"].float() + offset])
    return out


def patch_points(frame_points: torch.Tensor, count: int, patch_size: int) -> torch.Tensor:
    """A forced alignment per frame [T] -> the point of each of `count` audio positions [count]: where the centre of
    the patch it predicts (its next one) is, as model.text_pointer's uniform points are (the last frame past the end)."""
    frames = (torch.arange(count) + 1) * patch_size + patch_size // 2
    return frame_points.float()[frames.clamp(max=frame_points.shape[0] - 1)]


# ---- (a) training batch ----------------------------------------------------------------------------------------------
def pad_layouts(tok: TextTokenizer, cfg: UnifiedConfig, layouts: Sequence[ItemLayout]) -> dict[str, torch.Tensor]:
    """Right-padded tensors of layouts: input_ids, attention_mask, latents [B, N*P, D] with frame_mask, audio_offset,
    num_patches, is_tts, and the labels (stop: <|audio_start|> through the last patch of TTS, 1 at the last; text:
    the ASR target; ctc: each item's spoken ids, left-aligned, -100 after them) and, when any layout has a forced
    alignment, text_points [B, N] (`patch_points`; NaN elsewhere)."""
    patch = cfg.patch_size
    batch, length = len(layouts), max(len(item.ids) for item in layouts)
    max_patches = max(item.num_patches for item in layouts)
    input_ids = torch.full((batch, length), tok.id(PAD), dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    latents = torch.zeros(batch, max_patches * patch, cfg.latent_dim)
    frame_mask = torch.zeros(batch, max_patches * patch, dtype=torch.bool)
    stop_labels = torch.full((batch, length), -1.0)
    text_labels = torch.full((batch, length), -100, dtype=torch.long)
    ctc_labels = torch.full((batch, max(1, max(len(item.spoken) for item in layouts))), -100, dtype=torch.long)
    for i, item in enumerate(layouts):
        if item.spoken:
            ctc_labels[i, :len(item.spoken)] = torch.tensor(item.spoken)
        input_ids[i, :len(item.ids)] = torch.tensor(item.ids)
        attention_mask[i, :len(item.ids)] = 1
        latents[i, :item.latents.shape[0]] = item.latents
        frame_mask[i, :item.latents.shape[0]] = True
        if item.task == "tts":
            # Hidden states from <|audio_start|> through the last patch predict "continue"... "stop".
            stop_labels[i, item.audio_offset - 1:item.audio_offset + item.num_patches] = 0.0
            stop_labels[i, item.audio_offset + item.num_patches - 1] = 1.0
        if item.target:
            start = len(item.ids) - len(item.target)  # <|audio_end|> predicts the first transcript token
            text_labels[i, start:start + len(item.target)] = torch.tensor(item.target)
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "latents": latents, "frame_mask": frame_mask,
           "audio_offset": torch.tensor([item.audio_offset for item in layouts]),
           "num_patches": torch.tensor([item.num_patches for item in layouts]),
           "is_tts": torch.tensor([item.task == "tts" for item in layouts]),
           "stop_labels": stop_labels, "text_labels": text_labels, "ctc_labels": ctc_labels}
    if any(item.points is not None for item in layouts):
        points = torch.full((batch, max_patches), float("nan"))
        for i, item in enumerate(layouts):
            if item.points is not None:
                points[i, :item.num_patches] = patch_points(item.points, item.num_patches, patch)
        out["text_points"] = points
    return out


def collate(tok: TextTokenizer, cfg: UnifiedConfig, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Training items (dicts: id, task, text, latents [T, D], optional instruction and semantic [T', H]) -> a
    right-padded batch for UnifiedModel.forward."""
    if not items:
        raise ValueError("collate needs at least one item")
    layouts = [training_layout(tok, cfg, item) for item in items]
    out = pad_layouts(tok, cfg, layouts)
    if all(item.get("semantic") is not None for item in items):
        semantic = torch.zeros(*out["latents"].shape[:2], items[0]["semantic"].shape[-1])
        for i, (item, layout) in enumerate(zip(items, layouts)):
            frames = layout.latents.shape[0]  # TTS items may have lost a trailing partial patch
            if item["semantic"].shape[0] < frames:
                raise ValueError(f"item {item.get('id', '<no id>')}: semantic has {item['semantic'].shape[0]} "
                                 f"frames but latents have {frames}")
            semantic[i, :frames] = item["semantic"][:frames].float()
        out["semantic"] = semantic
    return out


def tts_text_span(tok: TextTokenizer, ids: Sequence[int], audio_offset: int) -> tuple[int, int]:
    """Where the text one sequence speaks lies, [start, end): after its task tag (or its instruction) up to
    <|audio_start|>; empty for ASR."""
    if not len(ids) or ids[0] != tok.id(TASK_TTS):
        return 0, 0
    start = list(ids).index(tok.id(INSTRUCT_END)) + 1 if len(ids) > 1 and ids[1] == tok.id(INSTRUCT_START) else 1
    return start, audio_offset - 1


def tts_text(tok: TextTokenizer, ids: Sequence[int], audio_offset: int) -> list[int]:
    """The text one sequence speaks (`tts_text_span`)."""
    start, end = tts_text_span(tok, ids, audio_offset)
    return list(ids[start:end])


def pad_texts(tok: TextTokenizer, texts: Sequence[Sequence[int]], device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Texts (from `tts_text`) -> PAD-padded ids [B, Lt] and lengths [B] (model.text_pointer's input). Lt >= 1
    even for a batch without text, so the pointer's weights take part in every step (distributed training needs
    every parameter in every backward)."""
    ids = torch.full((len(texts), max(1, *(len(text) for text in texts))), tok.id(PAD), dtype=torch.long)
    for i, text in enumerate(texts):
        ids[i, :len(text)] = torch.tensor(list(text), dtype=torch.long)
    return ids.to(device), torch.tensor([len(text) for text in texts], device=device)


def tts_text_ids(tok: TextTokenizer, input_ids: torch.Tensor, audio_offset: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """`tts_text` of every sequence of a padded batch, padded (`pad_texts`)."""
    texts = [tts_text(tok, row, offset) for row, offset in zip(input_ids.tolist(), audio_offset.tolist())]
    return pad_texts(tok, texts, input_ids.device)


# ---- (b) TTS prefix --------------------------------------------------------------------------------------------------
def tts_request_layout(tok: TextTokenizer, cfg: UnifiedConfig, text: str, prompt_latents: Any = None,
                       prompt_text: str | None = None, instruction: str | None = None) -> ItemLayout:
    """The layout generation continues: the text to speak, after the prompt transcript when there is a voice prompt
    (checked, cut to whole patches: the layout of a training utterance whose audio stops where the prompt does)."""
    if prompt_latents is None:
        return tts_layout(tok, cfg, text, None, instruction)
    prompt = whole_patches(check_latents(prompt_latents, cfg.latent_dim, "prompt_latents"), cfg.patch_size,
                           "prompt audio")
    return tts_layout(tok, cfg, join_prompt_and_target_text(prompt_text or "", text), prompt, instruction)


@dataclass
class TTSPrefix:
    """What generation starts from: the layout, its embeddings [L, H], the DiT history (the last prompt patch,
    normalised, or zeros) and, for Unite, the semantic encoder's cache primed with the prompt."""

    layout: ItemLayout
    embeds: torch.Tensor
    history: torch.Tensor
    semantic_cache: Any = None


def text_free_request_layout(tok: TextTokenizer, cfg: UnifiedConfig, prompt_latents: Any = None,
                             instruction: str | None = None) -> ItemLayout:
    """A TTS request's layout with its text (and prompt transcript) left out: what a TTS item trained with
    flow.text_dropout looks like cut where the prompt ends (the text-free branch of generation.text_cfg_strength)."""
    return tts_request_layout(tok, cfg, "", prompt_latents, "", instruction)


def tts_prefix(model: UnifiedModel, layout: ItemLayout, utterance_patches: float | None = None,
               points: torch.Tensor | None = None) -> TTSPrefix:
    """Embeds a TTS layout (from `tts_request_layout`) on the model's device; `utterance_patches`: the expected
    length of the whole utterance the prompt opens (for a model with `audio_progress` or `text_pointer`); `points`:
    the prompt positions' text pointer [N] (a model with a forced pointer; holitok_slm/infer/align.py)."""
    cfg, device = model.config, model.latent_scale.device
    prompt = layout.latents.to(device)
    audio, cache = model.embed_prompt(prompt, utterance_patches)
    if model.pointer is not None and layout.num_patches:
        text_ids, text_lengths = pad_texts(model.text_tokenizer,
                                           [tts_text(model.text_tokenizer, layout.ids, layout.audio_offset)], device)
        if model.forced_pointer:
            if points is None or points.shape[0] < layout.num_patches:
                raise ValueError("a model with a forced text pointer needs the prompt's alignment (`points`) for each "
                                 f"of its {layout.num_patches} patches")
            pointed = points[None, :layout.num_patches].to(device)
        else:
            expected = torch.tensor([[utterance_patches if utterance_patches is not None else layout.num_patches]],
                                    device=device)
            pointed = model.uniform_points(text_lengths, torch.arange(layout.num_patches, device=device)[None], expected)
        audio = audio + model.pointer_embeds(text_ids, text_lengths, pointed).to(audio.dtype)
    history = model.normalize_latents(prompt)[-cfg.patch_size:] if layout.num_patches else \
        torch.zeros(cfg.patch_size, cfg.latent_dim, device=device)
    ids, offset = torch.tensor([layout.ids], device=device), torch.tensor([layout.audio_offset], device=device)
    embeds = model.merge_embeddings(ids, audio, offset, torch.tensor([layout.num_patches], device=device))
    embeds = model.hide_tts_text(embeds, ids, offset)[0]
    return TTSPrefix(layout, embeds, history, cache)


# ---- (c) ASR prefix --------------------------------------------------------------------------------------------------
def asr_prefix(model: UnifiedModel, layout: ItemLayout) -> torch.Tensor:
    """Embeddings [L, H] of an ASR layout without transcript (from `asr_layout`), on the model's device: the same
    tensors a training batch of this one item holds, embedded as training embeds them."""
    device = model.latent_scale.device
    batch = pad_layouts(model.text_tokenizer, model.config, [layout])
    return model.embed_inputs(**{key: batch[key].to(device) for key in
                                 ("input_ids", "latents", "frame_mask", "audio_offset", "num_patches")})[0]
