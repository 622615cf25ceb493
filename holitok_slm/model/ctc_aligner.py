"""CTCAligner: a small non-causal CTC reader of latents whose only job is to time a transcript (forced alignment)."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from holitok.checkpoint import read_json, read_safetensors, state_dict_differences
from safetensors.torch import save_file
from torch import nn

from ..text_tokenizer import PAD, TextTokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TEXT_TOKENIZER_DIR = "text_tokenizer"


@dataclass
class CTCAlignerConfig:
    latent_dim: int = 64
    vocab_size: int = 0         # the text tokenizer's (filled in from it)
    width: int = 192
    conv_layers: int = 2        # kernel 5, same padding: it hears both sides of every frame
    lstm_layers: int = 2        # bidirectional
    steps_per_frame: int = 2    # CTC steps per latent frame: slack for ~18 characters a second at 25 frames


class CTCAligner(nn.Module):
    """Latents [B, T, D] -> CTC log-probabilities [B, T * steps_per_frame, V] over the text tokenizer's ids, blank
    <|pad|>. Unlike the unified model's CTC (causal: it writes the words it expects before it hears them,
    docs/learning.md section 22), it reads the whole utterance, so its emissions sit where the words are spoken."""

    def __init__(self, cfg: CTCAlignerConfig, text_tokenizer: TextTokenizer):
        super().__init__()
        if cfg.steps_per_frame < 1 or cfg.width % 2:
            raise ValueError(f"steps_per_frame must be >= 1 and width even, got {cfg}")
        cfg.vocab_size = len(text_tokenizer)
        self.config, self.text_tokenizer = cfg, text_tokenizer
        self.inp = nn.Linear(cfg.latent_dim, cfg.width)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.width, cfg.width, 5, padding=2) for _ in range(cfg.conv_layers))
        self.lstm = nn.LSTM(cfg.width, cfg.width // 2, num_layers=cfg.lstm_layers, bidirectional=True,
                            batch_first=True)
        self.out = nn.Linear(cfg.width, cfg.steps_per_frame * cfg.vocab_size)
        self.register_buffer("latent_mean", torch.zeros(cfg.latent_dim))
        self.register_buffer("latent_std", torch.ones(cfg.latent_dim))

    @property
    def blank(self) -> int:
        return self.text_tokenizer.id(PAD)

    def forward(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        x = self.inp((latents - self.latent_mean) / self.latent_std)
        # padding reads as the zeros a lone utterance's convolutions see past its end
        valid = (torch.ones(latents.shape[:2], device=latents.device) if lengths is None else
                 (torch.arange(latents.shape[1], device=latents.device)[None] < lengths.to(latents.device)[:, None]
                  ).float())[..., None]
        x = x * valid
        for conv in self.convs:
            x = (x + torch.relu(conv(x.transpose(1, 2))).transpose(1, 2)) * valid
        if lengths is not None:  # padding must not reach the valid frames through the backward direction
            x = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            x = nn.utils.rnn.pad_packed_sequence(self.lstm(x)[0], batch_first=True, total_length=latents.shape[1])[0]
        else:
            x = self.lstm(x)[0]
        batch, frames = latents.shape[:2]
        logits = self.out(x).view(batch, frames * self.config.steps_per_frame, self.config.vocab_size)
        return torch.log_softmax(logits.float(), -1)

    def save_pretrained(self, directory: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """config.json, model.safetensors (floating tensors in `dtype` if given) and the text tokenizer."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2))
        save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
                   for k, v in self.state_dict().items()}, str(directory / WEIGHTS_FILE))
        self.text_tokenizer.save(directory / TEXT_TOKENIZER_DIR)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "CTCAligner":
        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE, TEXT_TOKENIZER_DIR):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory} is not a CTCAligner folder ({name} missing)")
        model = cls(CTCAlignerConfig(**read_json(directory / CONFIG_FILE)), TextTokenizer.load(directory / TEXT_TOKENIZER_DIR))
        state = read_safetensors(directory / WEIGHTS_FILE)
        missing, unexpected, shapes = state_dict_differences(model.state_dict(), state)
        if missing or unexpected or shapes:
            raise ValueError(f"{directory / WEIGHTS_FILE} does not fit its config: missing={missing[:10]} "
                             f"unexpected={unexpected[:10]} shape_mismatch={shapes[:10]}")
        model.load_state_dict(state)
        return model.eval()
