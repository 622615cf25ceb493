"""StopHead: the binary end-of-audio (EOS) logit on the LLM hidden state that would condition the next patch."""
from __future__ import annotations

import torch
from torch import nn


class StopHead(nn.Module):
    """Logit of "the audio ends here" from the hidden state that would condition the next patch."""

    def __init__(self, llm_hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(llm_hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)
