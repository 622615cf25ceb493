"""ConditionBridge: an LLM hidden state -> the DiT head's condition width (the hand-over from backbone to flow head)."""
from __future__ import annotations

import torch
from torch import nn


class ConditionBridge(nn.Module):
    """Maps an LLM hidden state to the DiT width (two-layer MLP, like the connectors of VibeVoice/VoxCPM)."""

    def __init__(self, llm_hidden_size: int, dit_hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(llm_hidden_size, dit_hidden_size), nn.SiLU(),
                                 nn.Linear(dit_hidden_size, dit_hidden_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)
