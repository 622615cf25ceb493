"""The YIN pitch tracker: F0 and voicing per frame of 48 kHz audio (training targets, the probe, pitch latents).

Model-side because a tokenizer with `pitch_latents` (pitch_latents.py) runs it inside encode; the training terms
that use it live in holitok/train/pitch.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


REFERENCE_LOG2_F0 = math.log2(150.0)  # F0 is read and written relative to 150 Hz everywhere
TRACK_RATE = 16000  # the tracker runs on audio averaged down to 16 kHz: F0 lives far below 8 kHz


@dataclass
class PitchTrack:
    log2_f0: torch.Tensor  # [B, T] log2 Hz (meaningful where voiced)
    voiced: torch.Tensor   # [B, T] bool

    def pulse_f0(self, frames: int) -> torch.Tensor:
        """[B, frames] absolute log2 F0 to drive a harmonic head's pulse train with (stage_options.harmonic_f0
        'tracker', eval.report --resynth_f0 tracker): the tracked F0 where voiced, 150 Hz elsewhere (the head's
        voicing gate closes there); frames past the track's end are 150 Hz too."""
        out = torch.full((self.log2_f0.shape[0], frames), REFERENCE_LOG2_F0, device=self.log2_f0.device)
        count = min(frames, self.voiced.shape[1])
        out[:, :count] = self.log2_f0[:, :count].where(self.voiced[:, :count], out[:, :count])
        return out


@torch.no_grad()
def yin_track(audio: torch.Tensor, sample_rate: int, frame_hop: int, fmin: float = 60.0, fmax: float = 500.0,
              threshold: float = 0.15, voiced_threshold: float = 0.3, silence_rms: float = 1e-3,
              subframes: int = 4) -> PitchTrack:
    """[B, 1, L] or [B, L] audio -> F0 per frame of `frame_hop` samples (frame t covers [t * hop, (t + 1) * hop)).

    YIN (de Cheveigne and Kawahara 2002) on `subframes` analysis frames per output frame: the cumulative-mean-
    normalised difference function, the first dip under `threshold` (else the deepest), parabolic refinement. A frame
    is voiced when at least half its subframes are (dip under `voiced_threshold` and RMS over `silence_rms`); its
    log2 F0 is the mean over its voiced subframes.
    """
    if audio.dim() == 3:
        audio = audio[:, 0]
    if sample_rate % TRACK_RATE or frame_hop % (subframes * sample_rate // TRACK_RATE):
        raise ValueError(f"yin_track needs a sample rate that is a multiple of {TRACK_RATE} and a frame hop that "
                         f"splits into {subframes} subframes at {TRACK_RATE} Hz, got {sample_rate}, {frame_hop}")
    factor = sample_rate // TRACK_RATE
    x = F.avg_pool1d(audio.float()[:, None], factor, factor)[:, 0] if factor > 1 else audio.float()
    hop = frame_hop // factor // subframes
    frames = audio.shape[-1] // frame_hop
    tau_min, tau_max = int(TRACK_RATE / fmax), int(TRACK_RATE / fmin)
    window = tau_max + 1
    length = window + tau_max + 1
    # Subframe j is analysed over [j * hop + hop / 2 - length / 2, ...): centred on its own stretch of audio.
    left = length // 2 - hop // 2
    x = F.pad(x, (left, length))
    count = frames * subframes
    segments = x.unfold(-1, length, hop)[:, :count]  # [B, S, length]
    n_fft = 1 << (2 * length - 1).bit_length()
    leading = torch.fft.rfft(segments[..., :window], n_fft)
    full = torch.fft.rfft(segments, n_fft)
    correlation = torch.fft.irfft(leading.conj() * full, n_fft)[..., : tau_max + 1]  # r(tau) over the window
    power = F.pad(segments.square().cumsum(-1), (1, 0))
    energy_lagged = power[..., window: window + tau_max + 1] - power[..., : tau_max + 1]  # sum of x[j+tau]^2
    difference = (power[..., window: window + 1] + energy_lagged - 2 * correlation).clamp(min=0)
    taus = torch.arange(tau_max + 1, device=x.device, dtype=x.dtype)
    running = difference[..., 1:].cumsum(-1)
    normalised = torch.ones_like(difference)
    normalised[..., 1:] = difference[..., 1:] * taus[1:] / running.clamp(min=1e-12)
    normalised[..., :tau_min] = 2.0
    below = normalised < threshold
    first = torch.where(below.any(-1), below.float().argmax(-1), normalised.argmin(-1))
    # Walk from the first dip to its bottom: the smallest value within a quarter period after it.
    span = torch.arange(tau_max // 4 + 1, device=x.device)
    candidates = (first[..., None] + span).clamp(max=tau_max)
    values = normalised.gather(-1, candidates).masked_fill(span > (first[..., None] // 4), 3.0)
    tau = candidates.gather(-1, values.argmin(-1, keepdim=True))[..., 0]
    inner = tau.clamp(1, tau_max - 1)
    a, b, c = (normalised.gather(-1, (inner + k)[..., None])[..., 0] for k in (-1, 0, 1))
    curvature = a - 2 * b + c
    curved = curvature.abs() > 1e-9
    shift = ((a - c) / (2 * curvature.where(curved, torch.ones_like(b)))).clamp(-1, 1)
    shift = shift.where(curved, torch.zeros_like(b))
    refined = inner.to(x.dtype) + shift
    rms = segments[..., :window].square().mean(-1).sqrt()
    voiced = (normalised.gather(-1, tau[..., None])[..., 0] < voiced_threshold) & (rms > silence_rms)
    log2_f0 = torch.log2(TRACK_RATE / refined.clamp(min=1.0))
    voiced = voiced.view(-1, frames, subframes)
    log2_f0 = log2_f0.view(-1, frames, subframes)
    count_voiced = voiced.sum(-1)
    mean = (log2_f0 * voiced).sum(-1) / count_voiced.clamp(min=1)
    return PitchTrack(mean.where(count_voiced > 0, torch.full_like(mean, REFERENCE_LOG2_F0)),
                      count_voiced * 2 >= subframes)
