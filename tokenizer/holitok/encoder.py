"""Causal convolutional encoder: 48 kHz waveform -> latent_dim x 25 Hz, with a 2-frame lookahead at the very end."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import HoliTokConfig
from .layers import Conv1d, fast_cpu_enabled, inference_layout
from .stft_frontend import STFTFrontend

STEM_CHANNELS = 12  # fixed by the released architecture, whatever the config's ladder says
RESIDUAL_DILATIONS = (1, 2, 4, 8, 16, 32)


class ConvLayer(nn.Module):
    """Wraps a conv as `.layer` (the released checkpoints nest the encoder's plain convs one level down)."""

    def __init__(self, conv: Conv1d) -> None:
        super().__init__()
        self.layer = conv

    def forward(self, x: Tensor, negative_slope: float | None = None) -> Tensor:
        return self.layer(x, negative_slope)

    def step(self, x: Tensor, state: dict, negative_slope: float | None = None) -> Tensor:
        return self.layer.step(x, state, negative_slope)

    def flush(self, state: dict) -> Tensor:
        return self.layer.flush(state)


class ResidualUnit(nn.Module):
    """x + conv(lrelu(conv_dilated(lrelu(x)))), both convs causal with kernel 3.

    Children are named "2" and "5": their positions in the authors' Sequential (the causal pads sat at 1 and 4).
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.add_module("2", Conv1d(channels, channels, 3, dilation=dilation))
        self.add_module("5", Conv1d(channels, channels, 3))
        self.act = nn.LeakyReLU()  # slope 0.01, torch's default, as released

    def forward(self, x: Tensor) -> Tensor:
        slope = self.act.negative_slope  # each conv applies it to its input (fused with its padding copy)
        return _residual(x, self._modules["5"](self._modules["2"](x, slope), slope))

    def step(self, x: Tensor, state: dict) -> Tensor:
        slope = self.act.negative_slope
        return _residual(x, self._modules["5"].step(self._modules["2"].step(x, state, slope), state, slope))


def _residual(x: Tensor, y: Tensor) -> Tensor:
    """x + y, into y (a fresh conv output) in inference: one large allocation less per unit (`HOLITOK_FAST_CPU=0`
    keeps the authors' out-of-place add, the bench's baseline)."""
    return y.add_(x) if not torch.is_grad_enabled() and fast_cpu_enabled() else x + y


class ResStack(nn.Module):
    """Six dilated residual units (dilations 1..32) after each downsampling conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ResidualUnit(channels, d) for d in RESIDUAL_DILATIONS)

    def forward(self, x: Tensor) -> Tensor:
        for unit in self.layers:
            x = unit(x)
        return x

    def step(self, x: Tensor, state: dict) -> Tensor:
        for unit in self.layers:
            x = unit.step(x, state)
        return x


class AudioEncoder(nn.Module):
    """stem conv (or STFT front end) -> [strided causal conv (k = 2 * stride) -> ResStack -> LeakyReLU(0.2)] x stages
    -> k5 lookahead conv."""

    def __init__(self, config: HoliTokConfig) -> None:
        super().__init__()
        channels = config.downsample_channels
        if config.encoder_frontend == "stft":
            stem: nn.Module = STFTFrontend(config.frontend_n_fft, config.frontend_hop, channels[0], config.sample_rate,
                                           config.frontend_long_n_fft, config.frontend_long_max_hz)
        else:
            stem = ConvLayer(Conv1d(1, STEM_CHANNELS, 3))
        layers: list[nn.Module] = [stem, nn.LeakyReLU(0.2)]
        for i, rate in enumerate(config.downsample_rates):
            layers += [ConvLayer(Conv1d(channels[i], channels[i + 1], 2 * rate, stride=rate)),
                       ResStack(channels[i + 1]), nn.LeakyReLU(0.2)]
        lookahead = config.num_encoder_lookahead
        layers.append(ConvLayer(Conv1d(channels[-1], config.latent_dim, 2 * lookahead + 1, lookahead=lookahead)))
        self.generator = nn.Sequential(*layers)

    @property
    def lookahead_conv(self) -> ConvLayer:
        return self.generator[-1]

    def features(self, audio: Tensor) -> Tensor:
        """Everything before the lookahead conv: strictly causal, so padding after an item never leaks into it."""
        return self._run(audio, lambda layer, x, **kw: layer(x, **kw))

    def forward(self, audio: Tensor) -> Tensor:
        return self.lookahead_conv(self.features(audio))

    def step_features(self, audio: Tensor, state: dict) -> Tensor:
        """features() for a chunk of a stream: every frame its samples so far determine."""
        return self._run(audio, lambda layer, x, **kw: layer.step(x, state, **kw))

    def _run(self, audio: Tensor, call) -> Tensor:
        """The generator up to the lookahead conv; each LeakyReLU before a conv is handed to that conv (fused)."""
        layers = list(self.generator[:-1])
        audio = inference_layout(call(layers[0], audio))  # the stem's 1-channel input has no layout to choose
        slope = None
        for layer in layers[1:]:
            if isinstance(layer, nn.LeakyReLU):
                slope = layer.negative_slope
            elif isinstance(layer, ConvLayer):
                audio, slope = call(layer, audio, negative_slope=slope), None
            else:
                audio = call(layer, F.leaky_relu(audio, slope) if slope is not None else audio)
                slope = None
        return F.leaky_relu(audio, slope) if slope is not None else audio

    def step(self, audio: Tensor, state: dict) -> Tensor:
        return self.lookahead_conv.step(self.step_features(audio, state), state)

    def flush(self, state: dict) -> Tensor:
        return self.lookahead_conv.flush(state)
