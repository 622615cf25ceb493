"""Temporal variational bottleneck: Linear -> 4-layer LSTM with residual skip -> Linear (one per side)."""
from __future__ import annotations

from torch import Tensor, nn

from .config import HoliTokConfig


class SkipLSTM(nn.Module):
    """Unidirectional multi-layer LSTM whose output is added to its input; carries (h, c) when streaming."""

    def __init__(self, dim: int, num_layers: int, skip: bool = True) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers=num_layers, batch_first=True)
        self.skip = skip

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.lstm(x)
        return y + x if self.skip else y

    def step(self, x: Tensor, state: dict) -> Tensor:
        if x.shape[1] == 0:
            return x
        y, state[self] = self.lstm(x, state.get(self))
        return y + x if self.skip else y


class MIBlock(nn.Sequential):
    """The `enc_mi_layer` / `dec_mi_layer` Sequential: latent_dim -> 4*latent_dim -> SkipLSTM -> latent_dim.

    Works channel-last ([B, T, D]) like the LSTM inside it.
    """

    def __init__(self, config: HoliTokConfig) -> None:
        width = config.bottleneck_dim
        super().__init__(nn.Linear(config.latent_dim, width), SkipLSTM(width, config.mi_num_layers, config.mi_skip),
                         nn.Linear(width, config.latent_dim))

    def step(self, x: Tensor, state: dict) -> Tensor:
        return self[2](self[1].step(self[0](x), state))
