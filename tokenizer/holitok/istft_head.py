"""Causal inverse-STFT output head: frame-rate features -> log-magnitude + phase -> irfft -> causal overlap-add.

Not part of the released HoliTok models (their decoder ends in a waveform conv, `conv_post`). It exists for the small
CPU presets (`config.decoder_head = "istft"`): the decoder stops upsampling at hop_size / istft_hop frames per second
and this head renders each frame's spectrum, so the expensive layers at 48 kHz disappear and the channels that are
left sit where they are cheap. Causality: frame t's windowed irfft starts at sample t * hop and reaches n_fft samples
into the future, so output sample s only depends on frames <= s // hop (no lookahead beyond the decoder's own).

Phase: "absolute" (`config.istft_phase`) reads each frame's phase from the projection; "advance" reads how far each
bin's phase moves from one frame to the next (its bin-centre advance plus a bounded deviation) and sums those
advances over the frames, as a phase vocoder does. Why: an absolute phase has to follow a clock the causal features
do not carry, and the shipped cpu-small decoder settled on phases that repeat every frame, so its output repeats
every hop (a 100 Hz comb at hop 480, whatever the voice's pitch; docs/learning.md section 34). Summed advances make a
sinusoid between bin centres continue from frame to frame.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .layers import Conv1d
from .pitch_latents import comb_and_phase

LOG_MAGNITUDE_CEILING = 6.0  # exp(6) ~ 400 per bin: a finite bound keeps an untrained head from overflowing
# The projection's raw outputs are scaled before use. Speech spans ~10 nats of log-magnitude (harmonics near
# log 3, empty bands below -5) and Adam moves each weight by about the learning rate per step, so an unscaled head
# needed thousands of steps just to reach the right levels and the encoder's latents collapsed meanwhile
# (docs/learning.md: 4 fixed segments, 150 steps, mel loss 0.53 unscaled vs 0.17 scaled). The weights start
# 1/scale smaller, so the initial output statistics are those of an unscaled head.
LOG_MAGNITUDE_SCALE, LOG_MAGNITUDE_OFFSET, PHASE_SCALE = 8.0, -3.0, 3.0
# With pitch latents a voiced frame's magnitude is the head's times floor + (1 - floor) x the comb, times the gain.
# Measured as oracles on the shipped decoder's magnitudes at the tracked F0 (docs/learning.md section 35): floor 0.05
# read PESQ-WB well above floor 0.3; gain 2 roughly keeps the frame's energy (the comb's mean square is ~1/4 to 1/2).
COMB_FLOOR, COMB_GAIN = 0.05, 2.0


class HiddenBranch(nn.Module):
    """A per-frame two-layer branch beside the head's linear projection; its output layer starts at zero.

    Why: one linear map from ~200 channels may not draw a voice's harmonic comb at every F0. Measured on the shipped
    cpu-small decoder's features (docs/learning.md section 34): a refitted linear map reads the original's harmonic-
    resolving log spectrum at held-out L1 0.78, a 1024-wide two-layer network at 0.62 (yet trained under the mel loss
    on those latents, which carry no pitch, a 512-wide branch gained nothing). Starting at zero, the branch
    leaves a trained head's output unchanged, so a decoder-only fine-tune can add it to a shipped tokenizer
    (holitok/train/checkpointing.py adds `zero_init` modules that a checkpoint predates).
    """

    zero_init = True

    def __init__(self, channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.inner = Conv1d(channels, hidden, 1)
        self.outer = Conv1d(hidden, out_channels, 1, weight_norm=False)
        self.outer.zero_init = True  # HoliTok.reset_parameters keeps it at zero
        with torch.no_grad():
            self.outer.weight.zero_()
            self.outer.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(torch.nn.functional.gelu(self.inner(x)))


class ISTFTHead(nn.Module):
    def __init__(self, channels: int, n_fft: int, hop: int, hidden: int = 0, phase: str = "absolute",
                 sample_rate: int = 0) -> None:
        super().__init__()
        self.sample_rate = sample_rate  # only a pitch track (pitch_latents.py) needs it
        if n_fft % hop or n_fft < 2 * hop:
            raise ValueError(f"istft head needs n_fft to be a multiple (>= 2) of the hop, got n_fft={n_fft}, hop={hop}")
        if phase not in ("absolute", "advance"):
            raise ValueError(f"istft head phase must be 'absolute' or 'advance', got {phase!r}")
        self.n_fft, self.hop, self.overlap, self.phase = n_fft, hop, n_fft // hop, phase
        self.bins = n_fft // 2 + 1
        self.proj = Conv1d(channels, 2 * self.bins, 1)
        self.branch = HiddenBranch(channels, hidden, 2 * self.bins) if hidden else None
        # Periodic Hann windows `overlap` apart sum to overlap / 2 everywhere: scaled to sum to one.
        window = torch.hann_window(n_fft, periodic=True) * (2.0 / self.overlap)
        self.register_buffer("window", window, persistent=False)
        # A sinusoid at bin k's centre frequency advances 2 pi k hop / n_fft per frame (float64: summed over frames).
        centre = (2 * math.pi * torch.arange(self.bins, dtype=torch.float64) * hop / n_fft) % (2 * math.pi)
        self.register_buffer("centre_advance", centre, persistent=False)

    @torch.no_grad()
    def shrink_init(self) -> None:
        """Divide the freshly initialised projection by the output scales (HoliTok.reset_parameters calls this)."""
        scale = torch.cat([torch.full((self.bins,), LOG_MAGNITUDE_SCALE), torch.full((self.bins,), PHASE_SCALE)])
        target = self.proj.weight_g if self.proj.has_weight_norm else self.proj.weight  # per output channel
        target.div_(scale.view(-1, *([1] * (target.dim() - 1))).to(target))

    def _spectrum(self, x: Tensor, state: dict | None, track: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """[B, C, F] features -> [B, F, bins] complex spectra (`state`: None offline, else the stream's; `track`: the
        pitch latents' (log2 F0, voiced) per frame [B, F], which put voiced frames on a harmonic comb)."""
        raw = self.proj(x) if self.branch is None else self.proj(x) + self.branch(x)
        log_magnitude, phase = raw.float().chunk(2, dim=1)
        log_magnitude = log_magnitude * LOG_MAGNITUDE_SCALE + LOG_MAGNITUDE_OFFSET
        magnitude = log_magnitude.clamp(max=LOG_MAGNITUDE_CEILING).exp()
        phase = phase * PHASE_SCALE if self.phase == "absolute" else self._summed_advances(phase, state)
        if track is not None:
            magnitude, phase = self._on_comb(magnitude, phase, track, state)
        return torch.polar(magnitude, phase).transpose(1, 2)

    def _on_comb(self, magnitude: Tensor, phase: Tensor, track: tuple[Tensor, Tensor],
                 state: dict | None) -> tuple[Tensor, Tensor]:
        """Voiced frames: the head's magnitude under the comb at the track's F0, with the harmonics' own phases (the
        fundamental's running phase is float64 and carried by a stream, so a cut stream sums to the offline phases)."""
        log2_f0, voiced = track
        if not self.sample_rate:
            raise ValueError("a pitch track needs the head's sample_rate (ISTFTHead(..., sample_rate=...))")
        if log2_f0.shape != magnitude.shape[::2] or voiced.shape != log2_f0.shape:
            raise ValueError(f"pitch track {tuple(log2_f0.shape)} / {tuple(voiced.shape)} does not match the head's "
                             f"{magnitude.shape[-1]} frames")
        running = state.get((self, "fundamental")) if state is not None else None
        if running is None:
            running = torch.zeros(magnitude.shape[0], dtype=torch.float64, device=magnitude.device)
        comb, harmonic_phase, after = comb_and_phase(log2_f0, running, self.n_fft, self.hop, self.sample_rate)
        if state is not None:
            state[(self, "fundamental")] = after
        on = voiced[:, None, :]
        return (torch.where(on, magnitude * (COMB_FLOOR + (1 - COMB_FLOOR) * comb) * COMB_GAIN, magnitude),
                torch.where(on, harmonic_phase, phase))

    def _summed_advances(self, raw: Tensor, state: dict | None) -> Tensor:
        """[B, bins, F] raw deviations -> each frame's phase: the previous frame's plus the bin-centre advance plus a
        deviation within +-pi (+-sr / hop / 2 Hz around the centre). The running phase is float64 and wrapped, so a
        stream cut anywhere sums to the offline phases; the stream keeps the last frame's phase."""
        deviation = math.pi * torch.tanh(raw.double() * (PHASE_SCALE / math.pi))
        advance = self.centre_advance[:, None] + deviation
        start = state.get((self, "advance")) if state is not None else None
        phase = advance.cumsum(-1) if start is None else start[..., None] + advance.cumsum(-1)
        phase = torch.remainder(phase, 2 * math.pi)
        if state is not None:  # step() never gets here with zero frames
            state[(self, "advance")] = phase[..., -1]
        return phase.float()

    def _blocks(self, spectrum: Tensor) -> Tensor:
        """[B, F, bins] spectra -> [B, F, overlap, hop]: each frame's windowed waveform cut into hop-sized blocks."""
        frames = torch.fft.irfft(spectrum, n=self.n_fft, dim=-1) * self.window
        return frames.view(spectrum.shape[0], spectrum.shape[1], self.overlap, self.hop)

    def _overlap_add(self, blocks: Tensor, carry: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sums block k of frame t into output block t + k; returns (the F complete blocks, the carry into later ones)."""
        b, f, k, hop = blocks.shape
        total = blocks.new_zeros(b, f + k - 1, hop)
        if carry is not None:
            total[:, : k - 1] += carry
        for i in range(k):
            total[:, i: i + f] += blocks[:, :, i]
        return total[:, :f].reshape(b, 1, f * hop), total[:, f:]

    def forward(self, x: Tensor, track: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """[B, C, F] -> [B, 1, F * hop]."""
        return self._overlap_add(self._blocks(self._spectrum(x, None, track)), None)[0]

    def step(self, x: Tensor, state: dict, track: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], 1, 0)
        out, state[self] = self._overlap_add(self._blocks(self._spectrum(x, state, track)), state.get(self))
        return out
