"""Harmonic-plus-noise inverse-STFT head: the istft head's spectrum plus a harmonic comb at an F0 the decoder predicts.

Not part of the released HoliTok models; for the small CPU presets (`config.decoder_head = "harmonic"`). Why: the
istft head has to paint every harmonic's magnitude and phase bin by bin from its features, and the cpu-small
tokenizers rendered flat, smeared bands where the originals' harmonics move (docs/learning.md sections 31-32). Here
the head also predicts, per frame, an F0, a voicing probability and a gain per bin; a pulse train at that F0 (every
harmonic below HARMONIC_CEILING of the sample rate, amplitude 1, one running phase so the harmonics stay coherent
from frame to frame) is filtered by the gains and added to the istft head's spectrum, which is left for the noise.
The F0 is trained against a pitch tracker (holitok/train/pitch.py, `loss_weights.pitch`), so the latents must carry
the pitch; the pulse train itself passes no gradient to it.

Causality and streaming: frame t's pulse train uses frame t's F0 over its whole n_fft window and starts at the phase
the earlier frames' F0s reached. That phase is counted in integer units of 2^-32 cycles, so a stream that carries it
from chunk to chunk computes bit for bit what one offline pass does.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .istft_head import LOG_MAGNITUDE_CEILING, LOG_MAGNITUDE_OFFSET, LOG_MAGNITUDE_SCALE, ISTFTHead
from .layers import Conv1d
from .pitch_track import REFERENCE_LOG2_F0  # the F0 channel is log2 F0 relative to 150 Hz

LOG2_F0_BOUNDS = (math.log2(50.0), math.log2(1000.0))  # what the pulse train is driven with, whatever the head says
HARMONIC_CEILING = 0.45  # harmonics up to 0.45 x the sample rate (no aliasing at the top)
PHASE_UNITS = 1 << 32


class HarmonicISTFTHead(ISTFTHead):
    def __init__(self, channels: int, n_fft: int, hop: int, sample_rate: int, mix: str = "add",
                 hidden: int = 0, phase: str = "absolute") -> None:
        super().__init__(channels, n_fft, hop, hidden, phase)
        self.sample_rate, self.mix = sample_rate, mix
        # bins harmonic gains (log, scaled like the istft head's magnitudes), log2 F0 - REFERENCE, a voicing logit
        self.harmonic_proj = Conv1d(channels, self.bins + 2, 1)
        # A unit sinusoid filtered by gain g comes out with amplitude g; the istft head's bin of magnitude m gives a
        # sinusoid of amplitude 2 m / n_fft. The offset makes equal raw outputs give equal amplitudes.
        self.gain_offset = LOG_MAGNITUDE_OFFSET + math.log(2.0 / n_fft)

    @torch.no_grad()
    def shrink_init(self) -> None:
        super().shrink_init()
        scale = torch.cat([torch.full((self.bins,), LOG_MAGNITUDE_SCALE), torch.ones(2)])
        target = self.harmonic_proj.weight_g if self.harmonic_proj.has_weight_norm else self.harmonic_proj.weight
        target.div_(scale.view(-1, *([1] * (target.dim() - 1))).to(target))

    def pulse_train(self, log2_f0: Tensor, start: Tensor) -> tuple[Tensor, Tensor]:
        """[B, F] absolute log2 F0, [B] int64 start phase -> ([B, F, n_fft] each frame's pulse train, the phase after).

        Frame t: sum over k = 1..K of cos(k theta(n)), theta(n) = 2 pi (phase_t + f0_t n / sample_rate), K the
        harmonics under the ceiling; summed in closed form (the Dirichlet kernel) in float64.
        """
        f0 = log2_f0.detach().clamp(*LOG2_F0_BOUNDS).double().exp2()
        increment = torch.round(f0 * (self.hop / self.sample_rate) * PHASE_UNITS).long()  # per frame, exact
        starts = (start[:, None] + increment.cumsum(-1) - increment) % PHASE_UNITS
        after = (start + increment.sum(-1)) % PHASE_UNITS
        cycles_per_sample = increment.double() / (PHASE_UNITS * self.hop)
        n = torch.arange(self.n_fft, dtype=torch.float64, device=f0.device)
        theta = 2 * math.pi * (starts.double()[..., None] / PHASE_UNITS + cycles_per_sample[..., None] * n)
        harmonics = torch.floor(HARMONIC_CEILING / cycles_per_sample).clamp(min=1)[..., None]
        half = torch.sin(theta / 2)
        at_pulse = half.abs() < 1e-9
        pulses = torch.sin((harmonics + 0.5) * theta) / (2 * half.where(~at_pulse, torch.ones_like(half))) - 0.5
        return pulses.where(~at_pulse, harmonics.expand_as(pulses)).float(), after

    def render(self, x: Tensor, log2_f0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """[B, C, F] -> ([B, 1, F * hop] audio, [B, 2, F] log2 F0 relative to REFERENCE_LOG2_F0 and the voicing
        logit). `log2_f0` [B, F] (absolute): the F0 the pulse train runs at instead of the predicted one
        (stage_options.harmonic_f0 'tracker' in training, eval.report --resynth_f0 tracker as an oracle)."""
        raw = self.harmonic_proj(x).float()
        audio = self._overlap_add(self._blocks(sum(self._parts(x, raw, None, log2_f0))), None)[0]
        return audio, raw[:, self.bins:]

    def _spectrum(self, x: Tensor, state: dict | None, track: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if track is not None:  # config.py refuses pitch_latents with this head; this guards direct use
            raise ValueError("the harmonic head predicts its own F0; a pitch track needs the istft head")
        return sum(self._parts(x, self.harmonic_proj(x).float(), state, None))

    @torch.no_grad()
    def pulse_energy(self, x: Tensor) -> tuple[float, float]:
        """[B, C, F] head input (offline) -> (spectral energy of the filtered pulse train, of the noise part): a
        diagnostic of how much of the output the pulse train carries (docs/learning.md section 32)."""
        noise, harmonic = self._parts(x, self.harmonic_proj(x).float(), None, None)
        return float(harmonic.abs().square().sum()), float(noise.abs().square().sum())

    def _parts(self, x: Tensor, raw: Tensor, state: dict | None, log2_f0: Tensor | None) -> tuple[Tensor, Tensor]:
        """(the istft spectrum as the mix weighs it, the filtered pulse train's spectrum), [B, frames, bins] each;
        the head's output spectrum is their sum. `raw` is harmonic_proj(x)."""
        noise = super()._spectrum(x, state)
        gain_log = raw[:, : self.bins] * LOG_MAGNITUDE_SCALE + self.gain_offset
        gain = gain_log.clamp(max=LOG_MAGNITUDE_CEILING + math.log(2.0 / self.n_fft)).exp()
        voicing = torch.sigmoid(raw[:, self.bins + 1: self.bins + 2])
        gain = gain * voicing  # unvoiced frames: noise only
        if self.mix == "voicing":  # voiced frames: the pulse train only (docs/learning.md section 32)
            noise = noise * (1 - voicing).transpose(1, 2)
        key = (self, "phase")
        start = state.get(key) if state is not None else None
        if start is None:
            start = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        pulses, after = self.pulse_train(raw[:, self.bins] + REFERENCE_LOG2_F0 if log2_f0 is None else log2_f0, start)
        if state is not None:
            state[key] = after
        return noise, gain.transpose(1, 2) * torch.fft.rfft(pulses, dim=-1)


def add_harmonic_branch(state: dict[str, Tensor], head: HarmonicISTFTHead, prefix: str) -> bool:
    """Give an istft head's weights (`prefix` + "proj.*" in `state`) the harmonic branch `head` needs, in place.

    The gains start as the istft head's magnitudes (the same amplitude per bin, halved by the voicing probability
    of 0.5), the F0 and voicing rows as `head`'s own initialisation. Returns False when `state` already has one.
    """
    if any(k.startswith(prefix + "harmonic_proj.") for k in state):
        return False
    fresh = {k: v.detach().clone() for k, v in head.harmonic_proj.state_dict().items()}
    for name, tensor in fresh.items():
        source = state.get(prefix + "proj." + name)
        if source is None:
            raise KeyError(f"cannot add the harmonic branch: {prefix}proj.{name} is missing (the layouts of "
                           f"the istft head and the harmonic head's projection must match)")
        tensor[: head.bins] = source[: head.bins]
        state[prefix + "harmonic_proj." + name] = tensor
    return True
