"""AdamW with decay only on matrices, and the cosine-with-linear-warmup learning-rate schedule (paper App. B)."""
from __future__ import annotations

import math

import torch
from torch import nn

from holitok_slm.train.config import TrainConfig


FLOW_HEAD_PREFIXES = ("dit.", "bridge.")  # the parameters train.flow_head_lr_scale applies to


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Biases, norms and scalar/vector parameters are not weight-decayed (standard transformer practice); the flow
    head's parameters run at learning_rate x train.flow_head_lr_scale."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            # At scale 1 the head stays in the shared groups: the optimizer state keeps the layout older runs resume.
            head = cfg.flow_head_lr_scale != 1.0 and name.startswith(FLOW_HEAD_PREFIXES)
            groups.setdefault((param.dim() >= 2, head), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "weight_decay": cfg.weight_decay if decay else 0.0,
          "lr": cfg.learning_rate * (cfg.flow_head_lr_scale if head else 1.0)}
         for (decay, head), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))],
        lr=cfg.learning_rate, betas=cfg.betas, eps=cfg.eps)


def cosine_with_warmup(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate after `step` optimizer steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio))
