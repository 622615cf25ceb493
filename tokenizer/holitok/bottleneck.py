"""Temporal variational bottleneck: Linear -> 4-layer LSTM with residual skip -> Linear (one per side)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import HoliTokConfig
from .layers import fast_cpu_enabled

SHORT_STEP_FRAMES = 16  # a streaming step this short runs the plain LSTM cell (see SkipLSTM.step)


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
        if x.shape[1] <= SHORT_STEP_FRAMES and x.device.type == "cpu" and not torch.is_grad_enabled() \
                and fast_cpu_enabled():
            y, state[self] = self._cell_steps(x, state.get(self))
        else:
            y, state[self] = self.lstm(x, state.get(self))
        return y + x if self.skip else y

    def _cell_steps(self, x: Tensor, hc: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """nn.LSTM's equations written out, for short steps: oneDNN's LSTM costs ~1.5 ms per 512-wide layer and call
        whatever the length (2 threads; 6 ms for the 4 layers of a one-frame step, against 1 ms here), which every
        one-frame decoder step pays (bench/tokenizer_speed.py's first audio); from ~32 frames on the two are even."""
        lstm, (batch, frames, _) = self.lstm, x.shape
        if hc is None:
            zeros = x.new_zeros(lstm.num_layers, batch, lstm.hidden_size)
            hc = (zeros, zeros)
        h_out, c_out = [], []
        for layer in range(lstm.num_layers):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            gates_in = torch.matmul(x, w_ih.t()) + bias  # [B, T, 4H], gate order i, f, g, o as in nn.LSTM
            h, c = hc[0][layer], hc[1][layer]
            outputs = []
            for t in range(frames):
                i, f, g, o = torch.addmm(gates_in[:, t], h, w_hh.t()).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
            h_out.append(h)
            c_out.append(c)
        return x, (torch.stack(h_out), torch.stack(c_out))


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
