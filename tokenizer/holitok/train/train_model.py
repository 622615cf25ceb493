"""HoliTok plus the training-only parts each stage needs, with the stage's generator forward pass and freezing rules.

Stage I   deterministic autoencoder: z = mu (posterior mean), no sampling, no KL; everything in HoliTok trains.
Stage II  encoder and decoder frozen; enc_mi_layer, pre_proj, post_proj, dec_mi_layer (+ the training-only flow)
          train on z = mu + sigma * eps decoded by the frozen decoder, with a weak KL through the flow.
          With stage_options.decoder_only the encoder side is frozen instead and post_proj, dec_mi_layer and the
          decoder train on the same samples (decoder fine-tuning on fixed latents).
Stage III encoder + bottleneck (+ decoder if stage_options.train_decoder) train with a stronger KL, WavLM and
          x-vector distillation and the supervision network's text cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..harmonic_head import HarmonicISTFTHead
from ..model import HoliTok
from .config import TokenizerTrainConfig
from .distill import FrameDistillHead, UtteranceDistillHead, frame_distill_loss, utterance_distill_loss
from .flow import LatentFlow, flow_kl, sample_posterior
from ..pitch_track import yin_track
from .pitch import PitchHead, pitch_loss
from .supervision import SupervisionNetwork
from .teachers import TeacherTargets

BOTTLENECK_MODULES = ("enc_mi_layer", "pre_proj", "post_proj", "dec_mi_layer")
DECODER_SIDE_MODULES = ("post_proj", "dec_mi_layer", "decoder")


@dataclass
class GeneratorOutput:
    audio: torch.Tensor  # [B, 1, L] reconstruction
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # the stage's non-GAN terms (kl, wavlm, ...)
    target: torch.Tensor | None = None  # with a decode crop: the input's matching stretch [B, 1, L'] (else the input)


class TokenizerTrainModel(torch.nn.Module):
    def __init__(self, config: TokenizerTrainConfig, teacher_dims: tuple[int, int] | None = None):
        super().__init__()
        self.stage = config.stage
        self.holitok = HoliTok(config.model.build())
        latent_dim = self.holitok.latent_dim
        # The KL (through the flow) covers the learnt channels only: pitch channels (model.pitch_latents) are measured
        self.learnt_dim = self.holitok.config.latent_dim
        self.flow = LatentFlow(self.learnt_dim, config.flow) if self.stage >= 2 else None
        self.distills = config.distills
        if self.distills:
            if teacher_dims is None:
                raise ValueError("stage 3 distillation needs the teachers' output sizes (frame_dim, xvector_dim)")
            frame_dim, xvector_dim = teacher_dims
            self.frame_head = FrameDistillHead(latent_dim, config.distill.head_hidden, frame_dim)
            self.utterance_head = UtteranceDistillHead(latent_dim, config.distill.head_hidden, xvector_dim)
        if self.stage == 3:
            self.supervision = SupervisionNetwork(latent_dim, config.supervision)
        # loss_weights.pitch: the latents must carry F0 (pitch.py says why); 0 or absent builds nothing. A harmonic
        # decoder head predicts the F0 its pulse train runs at, so the term supervises that prediction instead.
        pitch_weight = config.loss_weights.get("pitch")
        self.harmonic_decoder = isinstance(getattr(self.holitok.decoder, "head", None), HarmonicISTFTHead)
        self.pitch_head = PitchHead(latent_dim) if pitch_weight and not self.harmonic_decoder else None
        self.head_pitch_loss = bool(pitch_weight) and self.harmonic_decoder
        crop, context = config.stage_options.decode_crop_seconds, config.stage_options.decode_context_seconds
        if crop is not None and self.stage == 1:
            raise ValueError("stage_options.decode_crop_seconds applies to stages 2 and 3, not stage 1 (its "
                             "segments are the crop)")
        if context and crop is None:
            raise ValueError("stage_options.decode_context_seconds needs decode_crop_seconds (the window it precedes)")
        if context < 0:
            raise ValueError(f"stage_options.decode_context_seconds must be >= 0, got {context}")
        frames_per_second = self.holitok.sample_rate / self.holitok.hop_size
        self.decode_crop_frames = max(1, round(crop * frames_per_second)) if crop is not None else None
        self.decode_context_frames = round(context * frames_per_second)
        if self.head_pitch_loss and self.decode_context_frames:
            raise ValueError("stage_options.decode_context_seconds is not supported with the harmonic head's pitch "
                             "term yet (its F0 frames would need the same window)")
        self.train_decoder = config.stage_options.train_decoder
        self.decoder_only = config.stage_options.decoder_only
        self.train_all = config.stage_options.train_all
        for option in ("decoder_only", "train_all"):
            if getattr(self, option) and self.stage != 2:
                raise ValueError(f"stage_options.{option} applies to stage 2 only, not stage {self.stage}")
        if self.decoder_only and self.train_all:
            raise ValueError("stage_options.decoder_only and stage_options.train_all exclude each other")
        self.decoder_trains = (self.stage == 1 or self.train_all or self.decoder_only
                               or (self.stage == 3 and self.train_decoder))
        self.tracker_f0 = config.stage_options.harmonic_f0 == "tracker"
        if config.stage_options.harmonic_f0 not in ("predicted", "tracker"):
            raise ValueError(f"stage_options.harmonic_f0 must be 'predicted' or 'tracker', got "
                             f"{config.stage_options.harmonic_f0!r}")
        if self.tracker_f0 and not self.harmonic_decoder:
            raise ValueError("stage_options.harmonic_f0 'tracker' needs decoder_head 'harmonic'")
        if self.harmonic_decoder and self.decoder_trains and not pitch_weight:
            raise ValueError("decoder_head 'harmonic' trains its F0 only through loss_weights.pitch: give it a weight "
                             "> 0 (configs/tokenizer/demo_stage3_harmonic.yaml uses 20)")
        self.apply_freezing()

    def apply_freezing(self) -> None:
        """Sets requires_grad per stage. Frozen tensors are never handed to an optimizer, so they stay bit-identical."""
        model = self.holitok
        if self.stage == 1 or (self.stage == 2 and self.train_all):
            model.requires_grad_(True)
        elif self.stage == 2:
            model.requires_grad_(False)
            for name in DECODER_SIDE_MODULES if self.decoder_only else BOTTLENECK_MODULES:
                getattr(model, name).requires_grad_(True)
        else:
            model.requires_grad_(True)
            model.decoder.requires_grad_(self.train_decoder)

    def reset_log_std_head(self, value: float) -> None:
        """Make pre_proj predict log_std = value everywhere (weights 0), leaving the mean half untouched."""
        dim = self.learnt_dim
        with torch.no_grad():
            self.holitok.pre_proj.weight[dim:].zero_()
            self.holitok.pre_proj.bias[dim:].fill_(value)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, targets: TeacherTargets | None = None,
                supervision_targets: list | None = None) -> GeneratorOutput:
        model = self.holitok
        frame_lengths = model.num_frames(lengths)
        posterior = model.forward_posterior(audio, lengths)
        mu, log_std = posterior.chunk(2, dim=1)
        mask = (torch.arange(mu.shape[-1], device=mu.device)[None] < frame_lengths[:, None])[:, None].to(mu.dtype)
        losses = {}
        if self.stage == 1:
            z = mu
        else:
            z, _ = sample_posterior(mu, log_std)
            learnt = self.learnt_dim
            losses["kl"] = flow_kl(z[:, :learnt], log_std[:, :learnt], mask, self.flow)
        if self.pitch_head is not None:
            track = yin_track(audio, model.sample_rate, model.hop_size)
            losses["pitch"] = pitch_loss(self.pitch_head(z), track, mask[:, 0])
        target = offsets = None
        decoded, decoded_lengths = z, frame_lengths
        if self.decode_crop_frames is not None:
            decoded, decoded_lengths, target, offsets = crop_for_decoding(
                z, frame_lengths, audio, self.decode_crop_frames, model.hop_size, self.decode_context_frames)
        if self.head_pitch_loss:
            head_hop = model.config.istft_hop
            track = yin_track(audio if target is None else target, model.sample_rate, head_hop)
            per_frame = model.hop_size // head_hop
            log2_f0 = track.pulse_f0(decoded.shape[-1] * per_frame) if self.tracker_f0 else None
            reconstruction, pitch = model.forward_decode(decoded, decoded_lengths, with_pitch=True, log2_f0=log2_f0)
            valid = torch.arange(pitch.shape[-1], device=pitch.device)[None] < decoded_lengths[:, None] * per_frame
            losses["pitch"] = pitch_loss(pitch, track, valid)
        else:
            reconstruction = model.forward_decode(decoded, decoded_lengths)
        if self.decode_context_frames:
            reconstruction = loss_window(reconstruction, offsets, self.decode_crop_frames, model.hop_size)
        if self.stage == 3:
            if supervision_targets is None or (self.distills and targets is None):
                raise ValueError("stage 3 needs supervision targets (and teacher targets when it distills) for "
                                 "every batch")
            if self.distills:
                losses["wavlm"] = frame_distill_loss(self.frame_head(z), frame_lengths, targets)
                losses["xvector"] = utterance_distill_loss(self.utterance_head(z, mask), targets)
            losses["ce"] = self.supervision(z, frame_lengths, supervision_targets)
        return GeneratorOutput(reconstruction, losses, target)


def crop_for_decoding(z: torch.Tensor, frame_lengths: torch.Tensor, audio: torch.Tensor, frames: int, hop: int,
                      context: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random window of at most `frames` valid latent frames per item, preceded by up to `context` of the item's
    own earlier frames: the latents [B, D, context + frames] (each item's from its first column on), their valid
    lengths, the input audio under the window alone [B, 1, frames * hop] (zeros past an item's end) and where the
    window starts in each row [B] (the context that item had; `loss_window` cuts the decoded window out)."""
    batch = z.shape[0]
    windows = z.new_zeros(batch, z.shape[1], context + frames)
    target = audio.new_zeros(batch, audio.shape[1], frames * hop)
    keeps = frame_lengths.clamp(max=frames)
    offsets = torch.zeros_like(frame_lengths)
    for row in range(batch):
        valid, keep = int(frame_lengths[row]), int(keeps[row])
        start = int(torch.randint(valid - keep + 1, (1,)))
        before = min(context, start)
        windows[row, :, :before + keep] = z[row, :, start - before:start + keep]
        offsets[row] = before
        piece = audio[row, :, start * hop:(start + keep) * hop]
        target[row, :, :piece.shape[-1]] = piece
    return windows, offsets + keeps, target, offsets


def loss_window(decoded: torch.Tensor, offsets: torch.Tensor, frames: int, hop: int) -> torch.Tensor:
    """[B, 1, (context + frames) * hop] decoded crops -> [B, 1, frames * hop]: each row from its window's start."""
    return torch.stack([decoded[row, :, int(o) * hop:(int(o) + frames) * hop] for row, o in enumerate(offsets)])
