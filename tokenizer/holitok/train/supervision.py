"""Stage III supervision network: semantic Transformer over latents -> Qwen2 decoder, task-label prompt, text CE.

Per item the decoder sees ``[task embedding] [bridge(semantic(z)) for each valid frame] [target tokens] [eos]`` and
is trained with cross-entropy on the target tokens only. The semantic Transformer is ``holitok.SemanticModule``
(the module HoliTok-Unite ships); the bridge, task embeddings and the decoder are training-only.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import SemanticConfig
from ..semantic import SemanticModule
from .config import SupervisionConfig
from .text_tokenizer import load_text_tokenizer


def build_decoder(config: SupervisionConfig):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if config.decoder_path:
        if not Path(config.decoder_path).is_dir():
            raise FileNotFoundError(f"supervision decoder directory not found: {config.decoder_path}")
        return Qwen2ForCausalLM.from_pretrained(config.decoder_path, local_files_only=True, dtype=torch.float32)
    return Qwen2ForCausalLM(Qwen2Config(**config.decoder_config))


class SupervisionNetwork(torch.nn.Module):
    def __init__(self, latent_dim: int, config: SupervisionConfig):
        super().__init__()
        self.config = config
        self.semantic = SemanticModule(SemanticConfig.from_dict({**config.semantic, "input_dim": latent_dim}))
        self.decoder = build_decoder(config)
        self.tokenizer = load_text_tokenizer(config.tokenizer)
        vocab = self.decoder.config.vocab_size
        if self.tokenizer.vocab_size > vocab:
            raise ValueError(f"the supervision tokenizer has {self.tokenizer.vocab_size} tokens but the decoder's "
                             f"vocabulary is {vocab}")
        hidden = self.decoder.config.hidden_size
        self.bridge = torch.nn.Linear(self.semantic.hidden_size, hidden)
        self.task_embeddings = torch.nn.Embedding(len(config.tasks), hidden)
        if config.freeze_decoder:
            self.decoder.requires_grad_(False)

    def choose_targets(self, labels: list[dict[str, str]]) -> list[tuple[int, list[int]] | None]:
        """Per item, one (task id, token ids + eos) drawn among the tasks its labels support, or None."""
        chosen = []
        for item_labels in labels:
            tasks = [t for t in self.config.tasks if t in item_labels]
            if not tasks:
                chosen.append(None)
                continue
            task = random.choice(tasks)
            ids = self.tokenizer.encode(item_labels[task])[: self.config.max_text_tokens]
            chosen.append((self.config.tasks.index(task), ids + [self.tokenizer.eos_token_id]))
        return chosen

    def forward(self, latents: torch.Tensor, frame_lengths: torch.Tensor,
                targets: list[tuple[int, list[int]] | None]) -> torch.Tensor:
        """Mean token cross-entropy over items with targets; an exact 0 that still reaches every parameter otherwise
        (so data-parallel ranks whose batch has no labels take part in the gradient all-reduce)."""
        features = self.semantic(latents.transpose(1, 2), lengths=frame_lengths)
        audio_embeds = self.bridge(features)
        embed = self.decoder.get_input_embeddings()
        sequences, label_rows = [], []
        for row, target in enumerate(targets):
            task_id, ids = target if target is not None else (0, [self.tokenizer.eos_token_id])
            ids_t = torch.tensor(ids, device=latents.device)
            frames = audio_embeds[row, : int(frame_lengths[row])]
            task = self.task_embeddings(torch.tensor([task_id], device=latents.device))
            sequences.append(torch.cat([task, frames, embed(ids_t)], dim=0))
            ignore = torch.full((1 + frames.shape[0],), -100, device=latents.device)
            label_rows.append(torch.cat([ignore, ids_t if target is not None else torch.full_like(ids_t, -100)]))
        length = max(s.shape[0] for s in sequences)
        inputs = torch.stack([F.pad(s, (0, 0, 0, length - s.shape[0])) for s in sequences])
        labels = torch.stack([F.pad(l, (0, length - l.shape[0]), value=-100) for l in label_rows])
        attention = torch.stack([
            (torch.arange(length, device=latents.device) < s.shape[0]).long() for s in sequences])
        logits = self.decoder(inputs_embeds=inputs, attention_mask=attention).logits
        # Position p predicts token p + 1.
        shifted_logits, shifted_labels = logits[:, :-1].float(), labels[:, 1:]
        total = F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1),
                                ignore_index=-100, reduction="sum")
        count = (shifted_labels != -100).sum()
        # With no labelled item the sum is an exact 0 that is still connected to every parameter.
        return total / count.clamp(min=1)
