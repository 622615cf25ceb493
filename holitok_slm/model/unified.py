"""UnifiedModel: Qwen2 backbone + audio input path + DiT flow head + stop/LM heads; embeddings, losses, checkpoints."""
from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from holitok.checkpoint import CheckpointError, read_json, read_safetensors, state_dict_differences
from safetensors.torch import save_model
from torch import nn

logger = logging.getLogger(__name__)

from .. import layout
from ..config import UnifiedConfig, record_derived
from ..text_tokenizer import PAD, TextTokenizer
from .backbone import Backbone
from .dit_head import DiTHead, sample_patch
from .condition_bridge import ConditionBridge
from .stop_head import StopHead
from .patch_encoder import PatchEncoder
from .progress import ProgressEmbedding
from .text_pointer import ALIGNMENTS, TextPointer, frame_points, uniform_points
from .semantic_input import SemanticInput
from .ctc_aligner import CTCAligner

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_TOKENIZER_DIR = "text_tokenizer"
ALIGNER_DIR = "aligner"  # a forced text pointer's CTCAligner, when its training store was aligned by one
LEGACY_TEXT_TOKENIZER_DIR = "tokenizer"  # the folder's name in model folders written before
# Speaking rate prior (patches per text token) used until fit_data_statistics measures it: ~0.27 s per
# Qwen2.5 token in read English/Chinese speech at 6.25 patches per second.
DEFAULT_PATCHES_PER_TOKEN = 1.7


def text_tokenizer_dir(model_dir: str | os.PathLike) -> Path:
    """Where a saved model keeps its text tokenizer (``text_tokenizer/``, or ``tokenizer/`` in older folders)."""
    model_dir = Path(model_dir)
    legacy = model_dir / LEGACY_TEXT_TOKENIZER_DIR
    return legacy if legacy.is_dir() and not (model_dir / TEXT_TOKENIZER_DIR).is_dir() else model_dir / TEXT_TOKENIZER_DIR


class UnifiedModel(nn.Module):
    """One set of weights for TTS (next-patch flow matching + stop head) and ASR (next-token prediction).

    Latents enter in raw HoliTok scale and are normalised inside by a global scale and bias (buffers set
    from data with `fit_data_statistics`), so flow-matching targets are roughly unit variance.
    """

    def __init__(self, cfg: UnifiedConfig, text_tokenizer: TextTokenizer | None = None):
        super().__init__()
        self.config = cfg
        self.text_tokenizer = text_tokenizer
        if text_tokenizer is None and cfg.backbone.vocab_size is None and cfg.backbone.pretrained_path is None:
            raise ValueError("without a text tokenizer, backbone.vocab_size must be set")
        vocab = len(text_tokenizer) if text_tokenizer is not None else (cfg.backbone.vocab_size or 0)
        written = cfg.to_dict()
        self.backbone = Backbone(cfg.backbone, vocab)
        llm_width = self.backbone.hidden_size
        if cfg.audio_input == "patch":
            self.patch_encoder = PatchEncoder(cfg.patch_encoder, cfg.latent_dim, cfg.patch_size, llm_width)
            self.semantic_input = None
        else:
            self.patch_encoder = None
            self.semantic_input = SemanticInput(cfg.semantic_input, cfg.latent_dim, cfg.patch_size, llm_width)
        # The backbone fills in the vocabulary size (or the shape of a loaded Qwen2), the semantic input the
        # encoder's config: recorded in cfg.derived, so the saved config says what was derived and where.
        record_derived(cfg, written, {"backbone": "holitok_slm/model/backbone.py",
                                      "semantic_input": "holitok_slm/model/semantic_input.py"})
        if not isinstance(cfg.flow.noise_samples, int) or cfg.flow.noise_samples < 1:
            raise ValueError(f"flow.noise_samples must be an integer >= 1, got {cfg.flow.noise_samples!r}")
        if not cfg.flow.input_noise_std >= 0:
            raise ValueError(f"flow.input_noise_std must be >= 0, got {cfg.flow.input_noise_std!r}")
        if not 0 <= cfg.flow.history_dropout <= 1:
            raise ValueError(f"flow.history_dropout must be in [0, 1], got {cfg.flow.history_dropout!r}")
        if not 0 <= cfg.flow.self_feed_share <= 1:
            raise ValueError(f"flow.self_feed_share must be in [0, 1], got {cfg.flow.self_feed_share!r}")
        if not 0 <= cfg.flow.history_splice_share <= 1:
            raise ValueError(f"flow.history_splice_share must be in [0, 1], got {cfg.flow.history_splice_share!r}")
        if not 0 <= cfg.flow.blind_history_share <= 1:
            raise ValueError(f"flow.blind_history_share must be in [0, 1], got {cfg.flow.blind_history_share!r}")
        if (cfg.flow.blind_history_share > 0 or cfg.generation.blind_history) and cfg.audio_input != "patch":
            raise ValueError("flow.blind_history_share / generation.blind_history need the patch input path")
        if not 0 <= cfg.flow.text_dropout < 1:
            raise ValueError(f"flow.text_dropout must be in [0, 1), got {cfg.flow.text_dropout!r}")
        if not isinstance(cfg.flow.self_feed_steps, int) or cfg.flow.self_feed_steps < 1:
            raise ValueError(f"flow.self_feed_steps must be an integer >= 1, got {cfg.flow.self_feed_steps!r}")
        # Only built when used, so checkpoints without it load unchanged.
        self.progress = ProgressEmbedding(llm_width) if cfg.audio_progress else None
        self.pointer = TextPointer(llm_width, cfg.text_pointer_radius) if cfg.text_pointer else None
        if cfg.text_pointer_only and not cfg.text_pointer:
            raise ValueError("model.text_pointer_only hides the TTS text from everything but the pointer: it needs "
                             "model.text_pointer")
        if cfg.text_pointer_alignment not in ALIGNMENTS:
            raise ValueError(f"model.text_pointer_alignment must be one of {ALIGNMENTS}, got "
                             f"{cfg.text_pointer_alignment!r}")
        self.forced_pointer = cfg.text_pointer and cfg.text_pointer_alignment == "forced"
        if cfg.text_pointer_alignment == "forced" and not cfg.text_pointer:
            raise ValueError("model.text_pointer_alignment 'forced' aligns the text pointer: it needs model.text_pointer")
        # How far the forced pointer moves on from one audio position to the next, in text tokens (TTS has no
        # alignment of the speech it is about to make). Only built when used, so checkpoints without it load unchanged.
        self.pace_head = nn.Linear(llm_width, 1) if self.forced_pointer else None
        if cfg.frame_pointer and not self.forced_pointer:
            raise ValueError("model.frame_pointer reads each frame's place in a forced alignment: it needs "
                             "model.text_pointer with model.text_pointer_alignment 'forced'")
        # Only built when used, so checkpoints without it load unchanged; it starts at zero (TextPointer), so a model
        # that gains it computes what it did before.
        self.frame_pointer = (TextPointer(llm_width, cfg.text_pointer_radius, out_width=cfg.dit.hidden_size)
                              if cfg.frame_pointer else None)
        self.bridge = ConditionBridge(llm_width, cfg.dit.hidden_size)
        self.stop_head = StopHead(llm_width)
        self.dit = DiTHead(cfg.dit, cfg.latent_dim, cfg.patch_size)
        # Only built when trained with it, so checkpoints without it load unchanged.
        self.patch_regressor = (nn.Linear(cfg.dit.hidden_size, cfg.patch_size * cfg.latent_dim)
                                if cfg.flow.patch_regression_weight > 0 else None)
        self._warned_unalignable_ctc = False
        steps = cfg.flow.ctc_steps_per_patch
        if not isinstance(steps, int) or steps < 1 or cfg.patch_size % steps:
            raise ValueError(f"flow.ctc_steps_per_patch must divide patch_size {cfg.patch_size}, got {steps!r}")
        uses_ctc = cfg.flow.asr_ctc_weight > 0 or cfg.flow.tts_ctc_weight > 0
        # Only built when used, so checkpoints without it load unchanged.
        self.ctc_expand = nn.Linear(llm_width, steps * llm_width) if steps > 1 and uses_ctc else None
        self.register_buffer("latent_bias", torch.zeros(()))
        self.register_buffer("latent_scale", torch.ones(()))
        self.register_buffer("patches_per_token", torch.tensor(DEFAULT_PATCHES_PER_TOKEN))

    # ---- construction and checkpoints ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: UnifiedConfig, text_tokenizer: TextTokenizer | None = None) -> "UnifiedModel":
        """Builds the model; the text tokenizer is built from `cfg.text_tokenizer` unless one is given."""
        return cls(cfg, text_tokenizer if text_tokenizer is not None else TextTokenizer.build(cfg.text_tokenizer))

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """config.json, model.safetensors (floating tensors in `dtype` if given: from_pretrained widens them back to
        float32), the text tokenizer and a kept aligner (in the same dtype)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2), encoding="utf-8")
        weights = self if dtype in (None, torch.float32) else copy.deepcopy(self).to(dtype)
        save_model(weights, str(directory / WEIGHTS_FILE))  # handles the tied embedding / LM head
        if self.text_tokenizer is not None:
            self.text_tokenizer.save(directory / TEXT_TOKENIZER_DIR)
        if self.aligner is not None:
            self.aligner.save_pretrained(directory / ALIGNER_DIR, dtype)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu") -> "UnifiedModel":
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory} is not a UnifiedModel checkpoint ({name} missing)")
        config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
        config = read_json(config_path)  # every failure names the file it comes from (CheckpointError: ValueError)
        try:
            cfg = UnifiedConfig.from_dict(config)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{config_path}: {err}") from None
        model = cls(cfg, TextTokenizer.load(text_tokenizer_dir(directory)))
        state = read_safetensors(weights_path, device=str(map_location))
        try:
            model.load_checked_state_dict(state)
        except ValueError as err:
            raise CheckpointError(f"{weights_path} does not fit {config_path}: {err}") from None
        if (directory / ALIGNER_DIR).is_dir():
            model.attach_aligner(CTCAligner.from_pretrained(directory / ALIGNER_DIR))
        return model.to(map_location)

    @property
    def aligner(self) -> CTCAligner | None:
        """The CTCAligner that aligned this forced-pointer model's training store (saved beside its weights in
        `aligner/`): its prompts must be aligned the same way. None: the model's own ASR CTC aligns them."""
        return self.__dict__.get("_aligner")

    def attach_aligner(self, aligner: CTCAligner | None) -> None:
        if aligner is not None and not self.forced_pointer:
            raise ValueError("an aligner is for a model with a forced text pointer (model.text_pointer_alignment)")
        # kept out of the module tree: not this model's weights, and never trained with it
        self.__dict__["_aligner"] = aligner.eval() if aligner is not None else None

    def load_checked_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Strict load that names every missing/unexpected key and every shape mismatch."""
        own = self.state_dict()
        # save_model stores each group of tied tensors (embedding / LM head) once; restore the aliases.
        groups: dict[int, list[str]] = {}
        for key, tensor in own.items():
            groups.setdefault(tensor.data_ptr(), []).append(key)
        for keys in groups.values():
            present = [k for k in keys if k in state]
            for key in keys:
                if key not in state and present and len(keys) > 1:
                    state[key] = state[present[0]]
        missing, unexpected, shapes = state_dict_differences(own, state)
        if missing or unexpected or shapes:
            raise ValueError(f"checkpoint does not match the model: missing={missing[:20]} "
                             f"unexpected={unexpected[:20]} shape_mismatch={shapes[:20]}")
        self.load_state_dict(state, strict=True)

    # ---- latent normalisation and data statistics ------------------------------------------------------------
    def noise_scale(self, temperature: float, pitch_temperature: float) -> torch.Tensor:
        """[latent_dim] scale of the flow's starting noise: `temperature`, and `pitch_temperature` on the pitch
        channels (config.pitch_channels, the last ones)."""
        scale = torch.full((self.config.latent_dim,), float(temperature), device=self.latent_scale.device)
        if self.config.pitch_channels:
            scale[-self.config.pitch_channels:] = float(pitch_temperature)
        return scale

    def normalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents - self.latent_bias) * self.latent_scale

    def denormalize_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return latents / self.latent_scale + self.latent_bias

    @torch.no_grad()
    def fit_data_statistics(self, items: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Sets the global latent bias/scale (mean/std over all frames) and the TTS speaking rate from items."""
        frames = torch.cat([item["latents"].reshape(-1).double() for item in items])
        mean, std = frames.mean(), frames.std()
        if not torch.isfinite(std) or std <= 0:
            raise ValueError(f"latent statistics are degenerate (mean={mean.item()}, std={std.item()})")
        self.latent_bias.fill_(mean.item())
        self.latent_scale.fill_(1.0 / std.item())
        tts = [item for item in items if item["task"] == "tts"]
        if tts and self.text_tokenizer is not None:
            patches = sum(layout.num_patches(item["latents"].shape[0], self.config.patch_size) for item in tts)
            tokens = sum(max(1, len(self.text_tokenizer.encode(item["text"]))) for item in tts)
            self.patches_per_token.fill_(patches / tokens)
        return {"latent_mean": mean.item(), "latent_std": std.item(), "patches_per_token": self.patches_per_token.item()}

    # ---- batching ---------------------------------------------------------------------------------------------
    def _require_tokenizer(self) -> TextTokenizer:
        if self.text_tokenizer is None:
            raise RuntimeError("this model was built without a text tokenizer")
        return self.text_tokenizer

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Training items (dicts: id, task, text, latents [T, D]) -> a right-padded batch for `forward`; the layout
        (prompts, whole patches, masks, labels) is holitok_slm.layout's."""
        return layout.collate(self._require_tokenizer(), self.config, items)

    # ---- shared pieces used by training and generation ----------------------------------------------------------
    def embed_audio(self, latents: torch.Tensor, frame_mask: torch.Tensor, num_patches: torch.Tensor,
                    semantic: torch.Tensor | None = None, expected_patches: torch.Tensor | None = None) -> torch.Tensor:
        """Raw latents [B, N*P, D] (+ mask, patch counts) -> LLM input embeddings [B, N, H] (zeros past the end).
        With `audio_progress`, each position's share of `expected_patches` [B] (default: `num_patches`, the whole
        utterance is given) is added."""
        batch, frames, dim = latents.shape
        n_max, patch = frames // self.config.patch_size, self.config.patch_size
        valid = torch.arange(n_max, device=latents.device)[None] < num_patches[:, None]
        if self.patch_encoder is not None:
            normalized = self.normalize_latents(latents) * frame_mask[..., None]
            patches = normalized.view(batch, n_max, patch, dim)[valid]
            encoded = self.patch_encoder(patches, frame_mask.view(batch, n_max, patch)[valid])
            out = encoded.new_zeros(batch, n_max, encoded.shape[-1])
            out = out.index_put(tuple(valid.nonzero(as_tuple=True)), encoded)
        else:
            if semantic is None or self.semantic_input.trainable:
                semantic = self.semantic_input.encode(latents, lengths=frame_mask.sum(1))
            out = self.semantic_input.pool_project(semantic, frame_mask) * valid[..., None]
        if self.progress is None:
            return out
        positions = torch.arange(n_max, device=latents.device)[None].expand(batch, -1)
        total = num_patches if expected_patches is None else expected_patches
        return out + self.progress_embeds(positions, total[:, None]) * valid[..., None].to(out.dtype)

    def progress_embeds(self, positions: torch.Tensor, expected_patches: torch.Tensor) -> torch.Tensor:
        """`audio_progress` embeddings [..., H] of audio positions (0 = the first patch) in utterances of
        `expected_patches` (broadcast with positions); only for a model built with it."""
        return self.progress(positions.float() / expected_patches.float().clamp(min=1))

    def pointer_embeds(self, text_ids: torch.Tensor, text_lengths: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """`text_pointer` embeddings [B, N, H] of audio positions whose points [B, N] (fractional token positions:
        `uniform_points` or a forced alignment) are in text_ids [B, Lt] (lengths [B], from
        holitok_slm.layout.tts_text_ids); only for a model built with it."""
        return self.pointer(self.backbone.embed(text_ids), text_lengths, points)

    @staticmethod
    def uniform_points(text_lengths: torch.Tensor, positions: torch.Tensor, expected_patches: torch.Tensor
                       ) -> torch.Tensor:
        """The uniform text pointer's points [B, N] (holitok_slm/model/text_pointer.py `uniform_points`)."""
        return uniform_points(text_lengths, positions, expected_patches)

    @property
    def flow_reads_history(self) -> bool:
        """False for `flow.history_dropout` 1: the flow head never reads a previous patch, in training, evaluation or
        generation, so what it draws depends on nothing the model generated before (holitok_slm/infer/tts.py)."""
        return self.config.flow.history_dropout < 1.0

    def pace(self, hidden: torch.Tensor) -> torch.Tensor:
        """The forced pointer's move [...] (text tokens, >= 0) from the audio position after `hidden` [..., H] to the
        next one; only for a model with model.text_pointer_alignment "forced"."""
        return F.softplus(self.pace_head(hidden).squeeze(-1).float())

    def embed_patch(self, patch_normalized: torch.Tensor, semantic_cache=None) -> torch.Tensor:
        """One generated patch (normalised) [B, P, D] -> next LLM input [B, H]; Unite uses the encoder's cache."""
        if self.patch_encoder is not None:
            return self.patch_encoder(patch_normalized)
        return self.semantic_input.step(self.denormalize_latents(patch_normalized), semantic_cache)

    def merge_embeddings(self, input_ids: torch.Tensor, audio_embeds: torch.Tensor, audio_offset: torch.Tensor,
                         num_patches: torch.Tensor) -> torch.Tensor:
        """Token embeddings with the audio embeddings written at each item's contiguous audio positions."""
        embeds = self.backbone.embed(input_ids)
        n_max = audio_embeds.shape[1]
        valid = torch.arange(n_max, device=input_ids.device)[None] < num_patches[:, None]
        rows, cols = valid.nonzero(as_tuple=True)
        return embeds.index_put((rows, audio_offset[rows] + cols), audio_embeds[rows, cols].to(embeds.dtype))

    def embed_inputs(self, input_ids: torch.Tensor, latents: torch.Tensor, frame_mask: torch.Tensor,
                     audio_offset: torch.Tensor, num_patches: torch.Tensor,
                     semantic: torch.Tensor | None = None, text_points: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's input embeddings [B, L, H] of a padded layout batch (holitok_slm.layout.pad_layouts;
        `text_points` [B, N]: its forced alignment, which a model with a forced text pointer needs)."""
        audio_embeds = self.embed_audio(latents, frame_mask, num_patches, semantic)
        if self.pointer is not None:
            text_ids, text_lengths = layout.tts_text_ids(self._require_tokenizer(), input_ids, audio_offset)
            positions = torch.arange(audio_embeds.shape[1], device=input_ids.device)[None].expand(len(input_ids), -1)
            valid = positions < num_patches[:, None]
            if self.forced_pointer:
                if text_points is None and bool((text_lengths > 0).any()):
                    raise ValueError("model.text_pointer_alignment is 'forced': a batch with TTS items needs "
                                     "text_points, their forced alignment (data_prep/align_latents.py)")
                points = (torch.zeros(positions.shape, device=input_ids.device) if text_points is None
                          else text_points[:, :audio_embeds.shape[1]].to(input_ids.device))
                if bool((~torch.isfinite(points) & valid & (text_lengths > 0)[:, None]).any()):
                    raise ValueError("model.text_pointer_alignment is 'forced': every TTS item needs text_points, "
                                     "its forced alignment (data_prep/align_latents.py); one has none")
            else:
                points = uniform_points(text_lengths, positions, num_patches[:, None])
            audio_embeds = audio_embeds + (self.pointer_embeds(text_ids, text_lengths, points)
                                           * valid[..., None]).to(audio_embeds.dtype)
        embeds = self.merge_embeddings(input_ids, audio_embeds, audio_offset, num_patches)
        return self.hide_tts_text(embeds, input_ids, audio_offset)

    def hide_tts_text(self, embeds: torch.Tensor, input_ids: torch.Tensor, audio_offset: torch.Tensor) -> torch.Tensor:
        """With `text_pointer_only`, the backbone reads each TTS text position as <|pad|>: the words reach the audio
        through the pointer alone (the positions stay, so the layout is unchanged); otherwise `embeds` as given."""
        if not self.config.text_pointer_only:
            return embeds
        tok = self._require_tokenizer()
        hidden = torch.zeros(embeds.shape[:2], dtype=torch.bool, device=embeds.device)
        for i, (row, offset) in enumerate(zip(input_ids.tolist(), audio_offset.tolist())):
            start, end = layout.tts_text_span(tok, row, offset)
            hidden[i, start:end] = True
        pad = self.backbone.embed(torch.tensor([tok.id(PAD)], device=embeds.device))[0].to(embeds.dtype)
        return torch.where(hidden[..., None], pad, embeds)

    def embed_prompt(self, prompt: torch.Tensor, expected_patches: float | None = None) -> tuple[torch.Tensor, Any]:
        """A voice prompt's raw latents [T, D] (whole patches; T may be 0) -> its audio embeddings [1, T/P, H] and,
        for Unite, the semantic encoder's cache primed with it (generation continues the cache; else None).
        `expected_patches`: the length of the whole utterance it opens (`audio_progress`; default: the prompt's)."""
        n_patches = prompt.shape[0] // self.config.patch_size
        cache = self.semantic_input.init_cache() if self.semantic_input is not None else None
        if n_patches == 0:
            return torch.zeros(1, 0, self.backbone.hidden_size, device=prompt.device), cache
        total = torch.tensor([expected_patches if expected_patches is not None else n_patches], device=prompt.device)
        if cache is not None:
            features = self.semantic_input.encoder.step(prompt[None], cache)
            mask = torch.ones(features.shape[:2], dtype=torch.bool, device=prompt.device)
            embeds = self.semantic_input.pool_project(features, mask)
            if self.progress is None:
                return embeds, cache
            positions = torch.arange(embeds.shape[1], device=prompt.device)[None]
            return embeds + self.progress_embeds(positions, total[:, None]).to(embeds.dtype), cache
        mask = torch.ones(1, prompt.shape[0], dtype=torch.bool, device=prompt.device)
        return self.embed_audio(prompt[None], mask, torch.tensor([n_patches], device=prompt.device),
                                expected_patches=total), None

    # ---- training forward ----------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor] | None = None, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of a collated batch, called as model(**batch) or model(batch): total `loss` plus detached
        flow/stop/text losses and their counts."""
        return self.compute_losses(**(batch if batch is not None else {}), **tensors)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, latents: torch.Tensor,
                      frame_mask: torch.Tensor, audio_offset: torch.Tensor, num_patches: torch.Tensor,
                      semantic: torch.Tensor | None = None, text_points: torch.Tensor | None = None) -> torch.Tensor:
        """The backbone's last hidden states [B, L, H] over a collated batch (teacher forcing)."""
        embeds = self.embed_inputs(input_ids, latents, frame_mask, audio_offset, num_patches, semantic, text_points)
        position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        return self.backbone(embeds, attention_mask, position_ids)

    def compute_losses(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, latents: torch.Tensor,
                       frame_mask: torch.Tensor, audio_offset: torch.Tensor, num_patches: torch.Tensor,
                       is_tts: torch.Tensor, stop_labels: torch.Tensor, text_labels: torch.Tensor,
                       ctc_labels: torch.Tensor | None = None, semantic: torch.Tensor | None = None,
                       text_points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cfg = self.config.flow
        heard = latents
        if self.training and cfg.self_feed_share > 0:
            if semantic is not None:
                raise ValueError("flow.self_feed_share needs audio features computed from the latents; precomputed "
                                 "semantic features would keep the true audio")
            heard = self.self_fed_tts_inputs(input_ids, attention_mask, latents, frame_mask, audio_offset, num_patches,
                                             is_tts, text_points)
        if self.training and cfg.history_splice_share > 0:
            heard = self.spliced_tts_inputs(heard, num_patches, is_tts)
        if self.training and cfg.input_noise_std > 0:
            heard = self.noisy_tts_inputs(heard, is_tts)
        read = self.blinded_tts_inputs(heard, num_patches, is_tts) if (
            self.training and cfg.blind_history_share > 0) else heard
        hidden = self.hidden_states(input_ids, attention_mask, read, frame_mask, audio_offset, num_patches, semantic,
                                    text_points)

        frame_text = self.flow_frame_text(input_ids, audio_offset, num_patches, is_tts, text_points, latents.shape[1])
        flow_loss, flow_count, regression_loss = self._flow_loss(hidden, latents, frame_mask, audio_offset,
                                                                 num_patches, is_tts, heard, frame_text)
        stop_loss, stop_count = self._stop_loss(hidden, stop_labels)
        text_loss, text_count = self._text_loss(hidden, text_labels)
        total = cfg.flow_weight * flow_loss + cfg.stop_weight * stop_loss + cfg.text_weight * text_loss
        out = {"flow_loss": flow_loss.detach(), "stop_loss": stop_loss.detach(), "text_loss": text_loss.detach(),
               "num_flow_frames": flow_count, "num_stop_positions": stop_count, "num_text_tokens": text_count}
        if regression_loss is not None:
            total = total + cfg.patch_regression_weight * regression_loss
            out["patch_regression_loss"] = regression_loss.detach()
        if self.forced_pointer:
            pace_loss = self._pace_loss(hidden, text_points, audio_offset, num_patches, is_tts)
            total = total + cfg.pace_weight * pace_loss
            out["pace_loss"] = pace_loss.detach()
        for task, weight, rows in (("asr", cfg.asr_ctc_weight, ~is_tts), ("tts", cfg.tts_ctc_weight, is_tts)):
            if weight > 0:
                if ctc_labels is None:
                    raise ValueError("flow.*_ctc_weight needs the batch's ctc_labels (holitok_slm.layout.collate)")
                ctc_loss = self._ctc_loss(hidden, ctc_labels, audio_offset, num_patches, rows)
                total = total + weight * ctc_loss
                out["ctc_loss" if task == "asr" else "tts_ctc_loss"] = ctc_loss.detach()
        return {"loss": total, **out}

    def noisy_tts_inputs(self, latents: torch.Tensor, is_tts: torch.Tensor) -> torch.Tensor:
        """Raw latents [B, T, D] with `flow.input_noise_std` (normalised units) of Gaussian noise on the TTS rows:
        what the model reads as its audio so far; the targets stay the clean latents."""
        noise = torch.randn_like(latents) * (self.config.flow.input_noise_std / self.latent_scale)
        return latents + noise * is_tts[:, None, None].to(latents.dtype)

    def blinded_tts_inputs(self, latents: torch.Tensor, num_patches: torch.Tensor, is_tts: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw latents [B, T, D] in which each TTS row, with probability `flow.blind_history_share`, reads as the zero
        patch (normalised) from a random patch at 15-60 % of its length on: what the backbone reads; the flow head's
        history and the targets stay `latents`."""
        out = latents.clone()
        patch = self.config.patch_size
        for row in is_tts.nonzero(as_tuple=True)[0].tolist():
            if float(torch.rand((), generator=generator)) >= self.config.flow.blind_history_share:
                continue
            count = int(num_patches[row])
            start = max(1, int(count * (0.15 + 0.45 * float(torch.rand((), generator=generator)))))
            out[row, start * patch:count * patch] = self.latent_bias.to(out.dtype)
        return out

    def spliced_tts_inputs(self, latents: torch.Tensor, num_patches: torch.Tensor, is_tts: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw latents [B, T, D] in which each TTS row, with probability `flow.history_splice_share`, has one stretch
        of 10-30 % of its frames (never its first) replaced by another, non-overlapping stretch of the same row:
        what the model reads; the targets stay the true latents."""
        out = latents.clone()
        share = self.config.flow.history_splice_share
        for row in is_tts.nonzero(as_tuple=True)[0].tolist():
            frames = int(num_patches[row]) * self.config.patch_size
            if float(torch.rand((), generator=generator)) >= share:
                continue
            span = max(1, int(frames * (0.1 + 0.2 * float(torch.rand((), generator=generator)))))
            # the places a stretch can come from: anywhere it does not overlap the one it replaces
            target = 1 + int(torch.randint(max(1, frames - span), (), generator=generator))
            sources = [start for start in range(0, frames - span + 1) if abs(start - target) >= span]
            if target + span > frames or not sources:
                continue
            source = sources[int(torch.randint(len(sources), (), generator=generator))]
            out[row, target:target + span] = latents[row, source:source + span]
        return out

    @torch.no_grad()
    def self_fed_tts_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, latents: torch.Tensor,
                            frame_mask: torch.Tensor, audio_offset: torch.Tensor, num_patches: torch.Tensor,
                            is_tts: torch.Tensor, text_points: torch.Tensor | None = None) -> torch.Tensor:
        """Raw latents [B, T, D] in which a `flow.self_feed_share` of the TTS rows' patches (a random draw) is the
        model's own sample of that patch from the true context before it: one teacher-forced pass without gradients
        samples them all at once (`flow.self_feed_steps` Euler steps, the checkpoint's CFG, sway and temperature).
        What the model then reads; the targets stay the true latents (parallel scheduled sampling)."""
        flow, options = self.config.flow, self.config.generation
        hidden = self.hidden_states(input_ids, attention_mask, latents, frame_mask, audio_offset, num_patches,
                                    text_points=text_points)
        _, condition, history, _ = self.flow_inputs(hidden, latents, frame_mask, audio_offset, num_patches, is_tts,
                                                    history_dropout=0.0)
        rows, cols = self.tts_patch_positions(latents.shape[1], num_patches, is_tts)
        chosen = torch.rand(rows.shape, device=latents.device) < flow.self_feed_share
        if not bool(chosen.any()):
            return latents
        noise = torch.randn_like(history[chosen]) * self.noise_scale(options.temperature, options.pitch_temperature)
        frame_text = self.flow_frame_text(input_ids, audio_offset, num_patches, is_tts, text_points, latents.shape[1])
        own = sample_patch(self.dit, condition[chosen], history[chosen], noise, flow.self_feed_steps,
                           options.cfg_strength, options.sway_coef,
                           frame_text=None if frame_text is None else frame_text[chosen])
        batch, frames, dim = latents.shape
        patch = self.config.patch_size
        fed = latents.clone().view(batch, frames // patch, patch, dim)
        fed[rows[chosen], cols[chosen]] = self.denormalize_latents(own).to(latents.dtype)
        replaced = torch.zeros(batch, frames // patch, dtype=torch.bool, device=latents.device)
        replaced[rows[chosen], cols[chosen]] = True
        replaced = replaced.repeat_interleave(patch, dim=1) & frame_mask.bool()  # padding frames stay as they were
        return torch.where(replaced[..., None], fed.view(batch, frames, dim), latents)

    def tts_patch_positions(self, frames: int, num_patches: torch.Tensor, is_tts: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(item, patch) indices [N] of every whole patch of the TTS items in a batch padded to `frames` frames."""
        n_max = frames // self.config.patch_size
        targets_mask = (torch.arange(n_max, device=num_patches.device)[None] < num_patches[:, None]) & is_tts[:, None]
        return targets_mask.nonzero(as_tuple=True)

    def _unused_branch_term(self, *modules: nn.Module) -> torch.Tensor:
        """0 x (sum of parameters): gives a branch that this batch did not use a gradient path (DDP/ZeRO)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        return sum((p.sum() for p in params), torch.zeros((), device=self.latent_scale.device)) * 0.0

    def flow_inputs(self, hidden, latents, frame_mask, audio_offset, num_patches, is_tts, heard=None,
                    history_dropout: float | None = None):
        """What the flow head is trained on, for every whole patch of the TTS items: target [N, P, D] (normalised),
        condition [N, H_dit] (the bridge on the hidden state before the patch), history [N, P, D] (the previous
        patch of `heard`, the latents the model read (default: `latents`); zeros for an utterance's first, and for
        the share `history_dropout` (default: `flow.history_dropout` in training, 0 otherwise; always all of them for
        a head that never reads one, `flow_reads_history`)) and frame weights [N, P]. N may be 0."""
        batch, frames, dim = latents.shape
        patch = self.config.patch_size
        n_max = frames // patch
        rows, cols = self.tts_patch_positions(frames, num_patches, is_tts)
        normalized = (self.normalize_latents(latents) * frame_mask[..., None]).view(batch, n_max, patch, dim)
        target = normalized[rows, cols]
        if heard is not None and heard is not latents:
            normalized = (self.normalize_latents(heard) * frame_mask[..., None]).view(batch, n_max, patch, dim)
        has_history = cols > 0
        if not self.flow_reads_history:
            history_dropout = 1.0
        elif history_dropout is None:
            history_dropout = self.config.flow.history_dropout if self.training else 0.0
        if history_dropout > 0:
            has_history = has_history & (torch.rand(cols.shape, device=cols.device) >= history_dropout)
        history = torch.where(has_history[:, None, None], normalized[rows, (cols - 1).clamp(min=0)], 0.0)
        condition = self.bridge(hidden[rows, audio_offset[rows] + cols - 1])
        return target, condition, history, frame_mask.view(batch, n_max, patch)[rows, cols]

    def flow_frame_text(self, input_ids: torch.Tensor, audio_offset: torch.Tensor, num_patches: torch.Tensor,
                        is_tts: torch.Tensor, text_points: torch.Tensor | None, frames: int) -> torch.Tensor | None:
        """model.frame_pointer's frame text [N, P, H_dit] of the patches `flow_inputs` returns (same order; a batch
        padded to `frames` frames): each frame's text at its point, piecewise linear between the forced alignment's
        patch centres (`frame_points`, as TTS computes them from the pace head's); None for a model without one."""
        if self.frame_pointer is None:
            return None
        rows, cols = self.tts_patch_positions(frames, num_patches, is_tts)
        if rows.numel() == 0:
            return torch.zeros(0, self.config.patch_size, self.config.dit.hidden_size, device=input_ids.device)
        if text_points is None:
            raise ValueError("model.frame_pointer needs the batch's text_points (a forced alignment)")
        text_ids, text_lengths = layout.tts_text_ids(self._require_tokenizer(), input_ids, audio_offset)
        points = text_points.to(input_ids.device).float()
        batch, count, patch = points.shape[0], points.shape[1], self.config.patch_size
        # audio position n's point is the centre of patch n + 1; the first patch's centre (and the one before it) 0
        centres = torch.cat([torch.zeros_like(points[:, :2]), points], dim=1)  # centres[:, m + 1] = patch m's
        frame_pts = frame_points(centres[:, :count], centres[:, 1:count + 1], centres[:, 2:], patch)  # [B, N, P]
        if not bool(torch.isfinite(frame_pts[rows, cols]).all()):
            raise ValueError("text_points is NaN at a TTS audio position: an item without a forced alignment")
        # every item's frames in one call (its text embedded once), then the TTS patches picked out
        text = self.frame_text(text_ids, text_lengths, frame_pts.flatten(1))
        return text.view(batch, count, patch, -1)[rows, cols]

    def frame_text(self, text_ids: torch.Tensor, text_lengths: torch.Tensor, frame_pts: torch.Tensor) -> torch.Tensor:
        """model.frame_pointer's frame text [B, K, H_dit] of frames whose points are frame_pts [B, K] (`frame_points`;
        TTS: the K = P frames of the patch about to be drawn) in text_ids [B, Lt] (lengths [B]); only for a model
        built with it."""
        return self.frame_pointer(self.backbone.embed(text_ids), text_lengths, frame_pts)

    def _flow_loss(self, hidden, latents, frame_mask, audio_offset, num_patches, is_tts, heard=None,
                   frame_text=None):
        target, condition, history, weights = self.flow_inputs(hidden, latents, frame_mask, audio_offset,
                                                               num_patches, is_tts, heard)
        count = weights.sum()
        regressor = [self.patch_regressor] if self.patch_regressor is not None else []
        if target.shape[0] == 0:
            unused = self._unused_branch_term(self.bridge, self.dit, *regressor,
                                              *([self.frame_pointer] if self.frame_pointer is not None else []))
            return unused, count, (unused if regressor else None)
        regression_loss = None
        if self.patch_regressor is not None:
            guess = self.patch_regressor(condition).view_as(target).float()
            errors = (guess - target.float()).pow(2).mean(-1)
            frame_weights = weights.to(errors.dtype)
            regression_loss = (errors * frame_weights).sum() / frame_weights.sum()
        flow = self.config.flow
        draws = flow.noise_samples if self.training else 1
        if draws > 1:  # the same targets and conditions, each with its own noise and time
            target, condition, history, weights = (t.repeat(draws, *([1] * (t.dim() - 1)))
                                                   for t in (target, condition, history, weights))
            if frame_text is not None:
                frame_text = frame_text.repeat(draws, 1, 1)
        channel_weights = None
        if self.config.pitch_channels and flow.pitch_weight != 1.0:
            channel_weights = torch.ones(target.shape[-1], device=target.device)
            channel_weights[-self.config.pitch_channels:] = flow.pitch_weight
        frame_errors = self.dit.flow_matching_errors(target, condition, history, flow.time_mu, flow.time_sigma,
                                                     flow.cfg_dropout, frame_text, channel_weights)
        weights = weights.to(frame_errors.dtype)
        return (frame_errors * weights).sum() / weights.sum(), count, regression_loss

    def _stop_loss(self, hidden, stop_labels):
        valid = stop_labels >= 0
        count = valid.sum()
        if not bool(valid.any()):
            return self._unused_branch_term(self.stop_head), count
        logits = self.stop_head(hidden[valid]).float()
        pos_weight = torch.tensor(self.config.flow.stop_pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, stop_labels[valid].float(), pos_weight=pos_weight), count

    def ctc_log_probs(self, audio_states: torch.Tensor) -> torch.Tensor:
        """Hidden states at audio positions [B, P, H] -> CTC log-probabilities over the text vocabulary
        [B, P * ctc_steps_per_patch, V] (float32; blank = <|pad|>): what the auxiliary CTC losses train and what joint
        CTC/attention ASR decoding (holitok_slm/infer/asr.py) reads."""
        if self.ctc_expand is not None:  # each patch's state -> one state per CTC step inside it
            batch, patches = audio_states.shape[:2]
            audio_states = self.ctc_expand(audio_states).view(batch, patches * self.config.flow.ctc_steps_per_patch, -1)
        return torch.log_softmax(self.backbone.text_logits(audio_states).float(), -1)

    def ctc_blank_id(self) -> int:
        """The CTC blank: <|pad|>, which never occurs in a transcript."""
        return self._require_tokenizer().id(PAD)

    def _ctc_loss(self, hidden, ctc_labels, audio_offset, num_patches, selected):
        """CTC of the selected items' spoken ids (ASR: the transcript, TTS: the text) over their audio positions;
        items with none (TTS laid out without its text: flow.text_dropout) are left out."""
        rows = (selected & (ctc_labels != -100).any(1)).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return self._unused_branch_term(self.backbone.lm.lm_head, *([self.ctc_expand] if self.ctc_expand else []))
        steps = int(num_patches[rows].max())
        positions = (audio_offset[rows, None] + torch.arange(steps, device=hidden.device)[None]).clamp(
            max=hidden.shape[1] - 1)
        log_probs = self.ctc_log_probs(hidden[rows[:, None], positions])
        lengths = num_patches[rows] * self.config.flow.ctc_steps_per_patch
        targets = [ctc_labels[r][ctc_labels[r] != -100] for r in rows.tolist()]
        unalignable = sum(len(t) > int(n) for t, n in zip(targets, lengths))
        if 2 * unalignable > len(targets) and not self._warned_unalignable_ctc:
            self._warned_unalignable_ctc = True  # once per process: the cause does not change between batches
            logger.warning("CTC: %d of %d items have more text tokens than CTC steps and add nothing to the loss; "
                           "a larger text vocabulary (fewer tokens per second) or flow.ctc_steps_per_patch fix it",
                           unalignable, len(targets))
        # zero_infinity: an item with more tokens than steps cannot be aligned; it adds nothing instead of inf.
        return F.ctc_loss(log_probs.transpose(0, 1), torch.cat(targets), input_lengths=lengths,
                          target_lengths=torch.tensor([len(t) for t in targets]),
                          blank=self.ctc_blank_id(), zero_infinity=True)

    def _pace_loss(self, hidden, text_points, audio_offset, num_patches, is_tts):
        """L1 (text tokens) of the pace head's move against the forced alignment's, at every TTS audio position: the
        hidden state one position before audio position n predicts points[n] - points[n-1] (points[-1] = 0, so
        <|audio_start|> predicts where the first patch starts)."""
        if text_points is None:  # a batch without TTS items (embed_inputs refuses TTS items without points)
            return self._unused_branch_term(self.pace_head)
        rows, cols = self.tts_patch_positions(text_points.shape[1] * self.config.patch_size, num_patches, is_tts)
        if rows.numel() == 0:
            return self._unused_branch_term(self.pace_head)
        points = text_points.to(hidden.device).float()
        before = torch.where(cols > 0, points[rows, (cols - 1).clamp(min=0)], torch.zeros_like(points[rows, cols]))
        target = points[rows, cols] - before
        known = torch.isfinite(target)
        if not bool(known.all()):
            raise ValueError("text_points is NaN at a TTS audio position: an item without a forced alignment")
        predicted = self.pace(hidden[rows, audio_offset[rows] + cols - 1])
        return F.l1_loss(predicted, target)

    def _text_loss(self, hidden, text_labels):
        valid = text_labels != -100
        count = valid.sum()
        if not bool(valid.any()):
            return self._unused_branch_term(self.backbone.lm.lm_head), count
        logits = self.backbone.text_logits(hidden[valid]).float()
        return F.cross_entropy(logits, text_labels[valid]), count
