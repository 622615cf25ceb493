"""Small heads on the LLM hidden state: the bridge into the DiT condition space and the binary EOS (stop) head."""
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


class StopHead(nn.Module):
    """Logit of "the audio ends here" from the hidden state that would condition the next patch."""

    def __init__(self, llm_hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(llm_hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)
