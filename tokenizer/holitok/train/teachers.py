"""Frozen Stage III teachers (WavLM hidden states, WavLM x-vector), loaded from local directories via transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DistillConfig
from .filters import Decimator


@dataclass
class TeacherTargets:
    frames: torch.Tensor  # [B, T_teacher, H] WavLM hidden states of the chosen layer
    frame_lengths: torch.Tensor  # [B] valid teacher frames
    xvector: torch.Tensor  # [B, E] speaker embedding


def _local_dir(path: str | None, what: str) -> str:
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"{what} teacher directory not found: {path!r} (teachers load from local "
                                "directories only; save one with `save_pretrained` first)")
    return path


class Teachers(torch.nn.Module):
    """Computes distillation targets for 48 kHz audio; all weights frozen, no gradients, never saved with the model."""

    def __init__(self, config: DistillConfig, sample_rate: int):
        super().__init__()
        from transformers import WavLMForXVector, WavLMModel

        self.config = config
        self.wavlm = WavLMModel.from_pretrained(_local_dir(config.wavlm_path, "WavLM"), local_files_only=True)
        self.xvector = WavLMForXVector.from_pretrained(_local_dir(config.xvector_path, "x-vector"),
                                                       local_files_only=True)
        layers = self.wavlm.config.num_hidden_layers
        if not 0 <= config.wavlm_layer <= layers:
            raise ValueError(f"distill.wavlm_layer={config.wavlm_layer} but the WavLM teacher at "
                             f"{config.wavlm_path} has {layers} layers (valid: 0..{layers})")
        if sample_rate % config.teacher_sample_rate:
            raise ValueError(f"teacher_sample_rate {config.teacher_sample_rate} must divide {sample_rate}")
        self.factor = sample_rate // config.teacher_sample_rate
        self.decimate = Decimator(self.factor)
        self.requires_grad_(False)
        self.eval()

    @property
    def frame_dim(self) -> int:
        return self.wavlm.config.hidden_size

    @property
    def xvector_dim(self) -> int:
        return self.xvector.config.xvector_output_dim

    def train(self, mode: bool = True) -> "Teachers":
        return super().train(False)  # teachers stay in eval mode (no dropout) whatever the trainer does

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> TeacherTargets:
        """audio [B, 1, L] at the model rate, lengths [B] in samples."""
        wave = self.decimate(audio[:, 0].float())
        wave_lengths = torch.clamp(-(-lengths // self.factor), max=wave.shape[-1]).to(wave.device)
        mask = torch.arange(wave.shape[-1], device=wave.device)[None] < wave_lengths[:, None]
        if self.config.normalize_teacher_input:
            count = wave_lengths[:, None].float()
            mean = (wave * mask).sum(-1, keepdim=True) / count
            var = (((wave - mean) * mask) ** 2).sum(-1, keepdim=True) / count
            wave = (wave - mean) / torch.sqrt(var + 1e-7) * mask
        # Group-norm feature extractors (WavLM Base) expect zero padding and no mask; layer-norm ones use the mask.
        wavlm_mask = mask.long() if self.wavlm.config.feat_extract_norm == "layer" else None
        hidden = self.wavlm(wave, attention_mask=wavlm_mask, output_hidden_states=True).hidden_states
        frames = hidden[self.config.wavlm_layer]
        frame_lengths = self.wavlm._get_feat_extract_output_lengths(wave_lengths).clamp(max=frames.shape[1])
        xvector = self.xvector(wave, attention_mask=mask.long()).embeddings
        return TeacherTargets(frames.float(), frame_lengths.long(), xvector.float())
