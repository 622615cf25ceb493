"""BigVGAN-style causal decoder: latents -> 48 kHz waveform via transposed-conv stages refined by AMP blocks (ending in
a waveform conv, or for the small CPU presets in an inverse-STFT head)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .activations import Activation1d
from .config import HoliTokConfig
from .harmonic_head import HarmonicISTFTHead
from .istft_head import ISTFTHead
from .layers import Conv1d, ConvTranspose1d, inference_layout
from .pitch_latents import widen_voicing


class AMPBlock1(nn.Module):
    """Three residual pairs: x += conv(act(conv_dilated(act(x)))), dilations from the config, all causal."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], learnable_filters: bool) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(Conv1d(channels, channels, kernel_size, dilation=d) for d in dilations)
        self.convs2 = nn.ModuleList(Conv1d(channels, channels, kernel_size) for _ in dilations)
        # Interleaved as in the released checkpoints: activations[2i] precedes convs1[i], [2i+1] precedes convs2[i].
        self.activations = nn.ModuleList(Activation1d(channels, learnable_filters) for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
        return x

    def step(self, x: Tensor, state: dict) -> Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            h = c1.step(self.activations[2 * i].step(x, state), state)
            x = x + c2.step(self.activations[2 * i + 1].step(h, state), state)
        return x


class Decoder(nn.Module):
    """conv_pre (k5, 2-frame lookahead) -> [causal transposed conv -> mean of AMP blocks] x stages -> act -> conv_post."""

    def __init__(self, config: HoliTokConfig) -> None:
        super().__init__()
        lookahead = config.num_decoder_lookahead
        self.conv_pre = Conv1d(config.latent_dim, config.upsample_initial_channel, 2 * lookahead + 1,
                               lookahead=lookahead)
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.voicing_dilation = config.pitch_voicing_dilation
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        channels = config.upsample_initial_channel
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
            out = channels // 2
            self.ups.append(nn.ModuleList([ConvTranspose1d(channels, out, kernel, rate)]))
            for k, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(AMPBlock1(out, k, dilations, learnable_filters=not config.fixed_filter))
            channels = out
        self.activation_post = Activation1d(channels, learnable_filters=not config.fixed_filter1)
        if config.decoder_head == "istft":
            self.head = ISTFTHead(channels, config.istft_n_fft, config.istft_hop, config.istft_hidden,
                                  config.istft_phase, config.sample_rate)
        elif config.decoder_head == "harmonic":
            self.head = HarmonicISTFTHead(channels, config.istft_n_fft, config.istft_hop, config.sample_rate,
                                          config.harmonic_mix, config.istft_hidden, config.istft_phase)
        else:
            self.conv_post = Conv1d(channels, 1, 7, bias=config.use_bias_at_final)
        self.use_tanh = config.use_tanh_at_final

    def _finish(self, x: Tensor) -> Tensor:
        return torch.tanh(x) if self.use_tanh else x.clamp(-1.0, 1.0)

    def _stage_blocks(self, i: int):
        return self.resblocks[i * self.num_kernels: (i + 1) * self.num_kernels]

    def body(self, x: Tensor, with_pitch: bool = False, log2_f0: Tensor | None = None,
             track: tuple[Tensor, Tensor] | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """Everything after conv_pre: strictly causal. `with_pitch` (harmonic head only): also its [B, 2, frames]
        F0 and voicing prediction, for the training loss; `log2_f0`: the F0 its pulse train runs at instead.
        `track`: the pitch latents' (log2 F0, voiced) per head frame, for the istft head's comb (pitch_latents.py)."""
        for i, up in enumerate(self.ups):
            x = up[0](x)
            blocks = self._stage_blocks(i)
            x = sum(block(x) for block in blocks) / self.num_kernels
        out = self.head if hasattr(self, "head") else self.conv_post
        x = self.activation_post(x)
        if track is not None:
            if self.voicing_dilation:
                track = widen_voicing(*track, self.voicing_dilation)
            return self._finish(out(x, track))
        if not with_pitch and log2_f0 is None:
            return self._finish(out(x))
        if not isinstance(out, HarmonicISTFTHead):
            raise ValueError("with_pitch and log2_f0 need decoder_head 'harmonic' (only that head has an F0)")
        audio, pitch = out.render(x, log2_f0)
        return (self._finish(audio), pitch) if with_pitch else self._finish(audio)

    def forward(self, x: Tensor, with_pitch: bool = False, log2_f0: Tensor | None = None,
                track: tuple[Tensor, Tensor] | None = None) -> Tensor | tuple[Tensor, Tensor]:
        return self.body(self.conv_pre(inference_layout(x)), with_pitch, log2_f0, track)

    def _body_step(self, x: Tensor, state: dict) -> Tensor:
        for i, up in enumerate(self.ups):
            x = up[0].step(x, state)
            x = sum(block.step(x, state) for block in self._stage_blocks(i)) / self.num_kernels
        out = self.head if hasattr(self, "head") else self.conv_post
        x = self.activation_post.step(x, state)
        queue = state.get((self, "track"))
        if queue is None:
            return self._finish(out.step(x, state))
        # conv_pre holds frames back for its lookahead; the track waits in the queue for the frames that come out
        frames = x.shape[-1]
        state[(self, "track")] = tuple(part[:, frames:] for part in queue)
        track = (self._widened(state, queue, frames) if self.voicing_dilation
                 else tuple(part[:, :frames] for part in queue))
        return self._finish(out.step(x, state, track))

    def _widened(self, state: dict, queue: tuple[Tensor, Tensor], frames: int) -> tuple[Tensor, Tensor]:
        """The next `frames` of the queued track, voicing widened as the whole-signal pass widens it: with the
        `voicing_dilation` frames drawn before them (kept in the state) and those after them (still queued: conv_pre's
        lookahead keeps more than that queued until the flush, where the signal ends as offline)."""
        width = self.voicing_dilation
        before = state.get((self, "track_before"))
        if before is None:
            before = tuple(part[:, :0] for part in queue)
        seen = tuple(torch.cat([kept, part[:, :frames + width]], -1) for kept, part in zip(before, queue))
        lead = before[0].shape[-1]
        state[(self, "track_before")] = tuple(part[:, max(0, lead + frames - width): lead + frames] for part in seen)
        widened = widen_voicing(*seen, width)
        return tuple(part[:, lead: lead + frames] for part in widened)

    def _queue_track(self, state: dict, track: tuple[Tensor, Tensor] | None) -> None:
        if track is None:
            return
        queue = state.get((self, "track"))
        state[(self, "track")] = track if queue is None else tuple(torch.cat(p, -1) for p in zip(queue, track))

    def step(self, x: Tensor, state: dict, track: tuple[Tensor, Tensor] | None = None) -> Tensor:
        self._queue_track(state, track)
        return self._body_step(self.conv_pre.step(inference_layout(x), state), state)

    def flush(self, state: dict) -> Tensor:
        return self._body_step(self.conv_pre.flush(state), state)
