"""Pitch latents: the tracker's F0 and voicing as extra latent channels, and the harmonic comb the istft head draws.

Not part of the released HoliTok models; a `pitch_latents` option of the small CPU presets (config.py). Why: the
cpu-small decoder's PESQ is lost to the pitch. Its output is a comb at the head's frame rate whatever the voice's
pitch, and measured oracles (docs/learning.md section 35) say that a 9-bin smoothed envelope under a harmonic comb
at the tracked F0 reads PESQ-WB ~2.1 while the same with F0 60 cents off reads ~1.5; the learnt latents never kept
pitch better than 60-70 cents (sections 31-34). So the pitch goes into the latents as numbers, and the head draws
the comb at that F0 instead of guessing it.

Layout: each latent frame gets 2 x R channels, R = hop_size / istft_hop head frames per latent frame: R values of
log2 F0 (F0_SCALE per octave around 150 Hz) then R voicing values (+1 voiced, -1 not). Head frame j's values are
measured on the tracker frame centred on that frame's synthesis window (istft_n_fft / 2 after its start), so the
comb sits where the window's energy is. Unvoiced frames hold the last voiced F0 (causal; 150 Hz before the first),
so the F0 channel is a continuous contour a generative model can continue.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .pitch_track import REFERENCE_LOG2_F0, yin_track

# Channel units per octave. Speech sits within about +-1 octave of 150 Hz (the learnt channels' spread is ~1), and a
# generative model's error is roughly even across channels in these units: at 4 an error of 0.05 is 15 cents, below
# the ~20 cents at which the comb's PESQ starts to fall (docs/learning.md section 35).
F0_SCALE = 4.0
VOICED, UNVOICED = 1.0, -1.0
# The posterior's log sigma for the pitch channels: sampling the posterior leaves them as measured (exp(-30) ~ 1e-13).
PITCH_LOG_STD = -30.0
# Extra samples of real audio on each side of the frames asked for, so YIN's analysis windows (at most ~17 ms on each
# side of a frame's centre at fmin 60 Hz) never see padding the whole-signal pass would not see.
CONTEXT_FRAMES = 2


def track_offset(n_fft: int, head_hop: int) -> int:
    """Samples from a head frame's start to the start of the tracker frame centred on its synthesis window."""
    return n_fft // 2 - head_hop // 2


def measure(audio: Tensor, sample_rate: int, head_hop: int, n_fft: int, first: int, count: int,
            held: Tensor | None = None, origin: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """[B, 1, L] audio whose first sample is sample `origin` of the signal -> (log2 F0 [B, count], voiced [B, count],
    held [B]) for head frames first .. first + count - 1; samples outside the given audio count as zeros. `held`: the
    log2 F0 an unvoiced start holds (the previous call's last value; None = 150 Hz). Frame-local, so a stream cut
    anywhere gets the whole-signal values as long as the audio reaches `needed_samples`."""
    if audio.dim() == 2:
        audio = audio[:, None]
    start = first * head_hop + track_offset(n_fft, head_hop) - CONTEXT_FRAMES * head_hop - origin
    stop = start + (count + 2 * CONTEXT_FRAMES) * head_hop
    length = audio.shape[-1]
    piece = audio[..., max(start, 0): max(min(stop, length), 0)]
    piece = F.pad(piece, (max(0, -start), stop - start - piece.shape[-1] - max(0, -start)))
    track = yin_track(piece, sample_rate, head_hop)
    log2_f0 = track.log2_f0[:, CONTEXT_FRAMES: CONTEXT_FRAMES + count].double()
    voiced = track.voiced[:, CONTEXT_FRAMES: CONTEXT_FRAMES + count]
    if held is None:
        held = torch.full((audio.shape[0],), REFERENCE_LOG2_F0, dtype=torch.float64, device=audio.device)
    index = torch.arange(count, device=audio.device).expand_as(voiced)
    last = torch.where(voiced, index, torch.full_like(index, -1)).cummax(-1).values
    filled = log2_f0.gather(-1, last.clamp(min=0)).where(last >= 0, held[:, None].expand_as(log2_f0))
    return filled, voiced, (filled[:, -1] if count else held)


def needed_span(first: int, count: int, head_hop: int, n_fft: int) -> tuple[int, int]:
    """The signal's samples [start, stop) that `measure` reads for head frames first .. first + count - 1."""
    start = first * head_hop + track_offset(n_fft, head_hop) - CONTEXT_FRAMES * head_hop
    return start, start + (count + 2 * CONTEXT_FRAMES) * head_hop


def to_channels(log2_f0: Tensor, voiced: Tensor, per_frame: int) -> Tensor:
    """[B, T * R] F0 and voicing -> [B, 2R, T] latent channels (float32)."""
    b, n = log2_f0.shape
    f0 = ((log2_f0 - REFERENCE_LOG2_F0) * F0_SCALE).float().view(b, n // per_frame, per_frame)
    v = torch.where(voiced, VOICED, UNVOICED).float().view(b, n // per_frame, per_frame)
    return torch.cat([f0, v], dim=-1).transpose(1, 2)


def from_channels(channels: Tensor) -> tuple[Tensor, Tensor]:
    """[B, 2R, T] latent channels (measured or generated) -> (log2 F0 [B, T * R] float64, voiced [B, T * R] bool)."""
    b, c, t = channels.shape
    f0, v = channels.transpose(1, 2).reshape(b, t, 2, c // 2).unbind(2)
    log2_f0 = f0.reshape(b, -1).double() / F0_SCALE + REFERENCE_LOG2_F0
    # F0 outside the tracker's range cannot be real; a generated outlier is clamped rather than drawn at 5 kHz
    return log2_f0.clamp(math.log2(40.0), math.log2(1000.0)), v.reshape(b, -1) > 0


def widen_voicing(log2_f0: Tensor, voiced: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """[B, N] track -> the same with each unvoiced frame within `width` frames of a voiced one voiced, at the nearest
    voiced frame's F0 (the earlier one on a tie). Frames beyond either end count as unvoiced: a stream passes the
    `width` frames on each side of the ones it draws (decoder.py)."""
    f0, wide = log2_f0.clone(), voiced.clone()
    for distance in range(1, width + 1):
        for shift in (distance, -distance):  # the earlier neighbour first
            source = torch.roll(voiced, shift, -1)
            source_f0 = torch.roll(log2_f0, shift, -1)
            if shift > 0:
                source[..., :shift] = False
            else:
                source[..., shift:] = False
            take = source & ~wide
            f0 = torch.where(take, source_f0, f0)
            wide = wide | take
    return f0, wide


def comb_and_phase(log2_f0: Tensor, running: Tensor, n_fft: int, hop: int, sample_rate: int
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Per head frame [B, F] log2 F0 and the fundamental's phase at the first frame's start [B] (float64, radians)
    -> (comb [B, bins, F]: each bin's Hann-window response to its nearest harmonic, in [0, 1]; phase [B, bins, F]:
    that harmonic's phase as the frame's DFT sees it; the fundamental's phase after the last frame [B]).

    A stationary harmonic h at h * F0 has phase h * phi at the frame's first sample (phi = the fundamental's
    running phase, summed over the hops at each frame's F0); a bin `nu` bins away from it sees that phase minus
    pi * nu (the window is centred n_fft / 2 samples in) and the Hann kernel's magnitude at nu."""
    f0 = torch.pow(2.0, log2_f0.double())
    advance = 2 * math.pi * f0 * hop / sample_rate
    phi = torch.remainder(running[:, None] + torch.cumsum(advance, -1) - advance, 2 * math.pi)  # at each frame's start
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.float64, device=f0.device) * sample_rate / n_fft
    harmonic = torch.round(bins[None, :, None] / f0[:, None]).clamp(min=1)  # [B, bins, F]
    nu = (harmonic * f0[:, None] - bins[None, :, None]) * n_fft / sample_rate
    kernel = (0.5 * torch.sinc(nu) + 0.25 * torch.sinc(nu - 1) + 0.25 * torch.sinc(nu + 1)) / 0.5
    phase = torch.remainder(harmonic * phi[:, None] - math.pi * nu, 2 * math.pi)
    after = torch.remainder(running + advance.sum(-1), 2 * math.pi)
    return kernel.abs().float(), phase.float(), after
