"""Stateful streaming encoder and decoder: chunks of any size in, exactly the offline output out.

Only the 2-frame lookaheads are held back: the encoder emits latent frame t once audio sample (t + 2) * hop has
arrived, the decoder emits the audio of frame t once latent t + 2 has arrived. `flush()` ends the stream the way the
offline call ends the signal (zero padding on the right).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .audio import as_model_input
from .layers import frame_mask
from .pitch_latents import measure, needed_span, to_channels


class StreamingEncoder:
    """Audio chunks [B, 1, n] (or [B, n]) -> posterior chunks [B, 2*D, k]."""

    def __init__(self, model, lengths: Tensor | None = None) -> None:
        self.model = model
        self.state: dict = {}
        self.frame_lengths = None if lengths is None else model.num_frames(torch.as_tensor(lengths))
        self.features_seen = 0
        self.finished = False
        # pitch latents (pitch_latents.py): the audio the tracker still needs, where it starts, frames measured so far
        self.audio, self.origin, self.frames_out, self.held = None, 0, 0, None

    def _mask_features(self, h: Tensor) -> Tensor:
        # Frames past an item's end must look like the zero padding the offline pass sees there.
        if self.frame_lengths is not None:
            h = h * frame_mask(self.frame_lengths.to(h.device), h.shape[-1], self.features_seen)
        self.features_seen += h.shape[-1]
        return h

    def _bottleneck(self, h: Tensor) -> Tensor:
        m = self.model
        if h.shape[-1] == 0:
            return h.new_zeros(h.shape[0], 2 * m.latent_dim, 0)
        h = m.enc_mi_layer.step(h.transpose(1, 2), self.state).transpose(1, 2)
        posterior = m._posterior_layout(m.pre_proj(h))
        return posterior if not m.pitch_channels else m.with_pitch_channels(posterior, self._pitch(posterior.shape[-1]))

    def _keep_audio(self, x: Tensor) -> None:
        if self.model.pitch_channels:
            self.audio = x if self.audio is None else torch.cat([self.audio, x], dim=-1)

    def _pitch(self, frames: int) -> Tensor:
        """The pitch channels of the next `frames` latent frames, from the audio kept so far (zeros after a flush)."""
        m, per_frame = self.model, self.model.pitch_channels // 2
        hop, n_fft = m.config.istft_hop, m.config.istft_n_fft
        first, count = self.frames_out * per_frame, frames * per_frame
        _, stop = needed_span(first, count, hop, n_fft)
        if not self.finished and stop > self.origin + self.audio.shape[-1]:
            raise RuntimeError(f"internal: the pitch tracker needs audio up to sample {stop}, the stream has "
                               f"{self.origin + self.audio.shape[-1]}")
        log2_f0, voiced, self.held = measure(self.audio, m.sample_rate, hop, n_fft, first, count, self.held,
                                             self.origin)
        self.frames_out += frames
        drop = max(0, min(needed_span(first + count, 1, hop, n_fft)[0] - self.origin, self.audio.shape[-1]))
        self.audio, self.origin = self.audio[..., drop:], self.origin + drop
        return to_channels(log2_f0, voiced, per_frame)

    @torch.no_grad()
    def step(self, audio) -> Tensor:
        if self.finished:
            raise RuntimeError("this stream was flushed; start a new one with model.stream_encoder()")
        x = as_model_input(audio, device=next(self.model.parameters()).device, allow_empty=True)
        self._keep_audio(x)
        enc = self.model.audio_encoder
        features = self._mask_features(enc.step_features(x, self.state))
        return self._bottleneck(enc.lookahead_conv.step(features, self.state))

    @torch.no_grad()
    def flush(self) -> Tensor:
        if self.finished:
            raise RuntimeError("flush() called twice")
        self.finished = True
        if self.model.pitch_channels and self.audio is None:  # flushed before any audio: nothing to measure
            self.audio = torch.zeros(1, 1, 0, device=next(self.model.parameters()).device)
        return self._bottleneck(self.model.audio_encoder.flush(self.state))


class StreamingDecoder:
    """Latent chunks [B, D, n] -> audio chunks [B, 1, m]; m = n * hop once the lookahead is filled."""

    def __init__(self, model, lengths: Tensor | None = None) -> None:
        self.model = model
        self.state: dict = {}
        self.frame_lengths = None if lengths is None else torch.as_tensor(lengths)
        self.frames_seen = 0
        self.samples_out = 0
        self.finished = False

    @torch.no_grad()
    def step(self, latents: Tensor) -> Tensor:
        if self.finished:
            raise RuntimeError("this stream was flushed; start a new one with model.stream_decoder()")
        m = self.model
        z = torch.as_tensor(latents, device=next(m.parameters()).device, dtype=torch.float32)
        if z.dim() != 3 or z.shape[1] != m.latent_dim:
            raise ValueError(f"expected latents [B, {m.latent_dim}, n], got {tuple(z.shape)}")
        if z.shape[-1] == 0:
            return z.new_zeros(z.shape[0], 1, 0)
        z, track = m.split_latents(z)
        h = m.dec_mi_layer.step(m.post_proj(z).transpose(1, 2), self.state).transpose(1, 2)
        if self.frame_lengths is not None:
            h = h * frame_mask(self.frame_lengths.to(h.device), h.shape[-1], self.frames_seen)
        self.frames_seen += h.shape[-1]
        return self._mask_audio(m.decoder.step(h, self.state, track))

    @torch.no_grad()
    def flush(self) -> Tensor:
        if self.finished:
            raise RuntimeError("flush() called twice")
        self.finished = True
        return self._mask_audio(self.model.decoder.flush(self.state))

    def _mask_audio(self, wav: Tensor) -> Tensor:
        # Audio is emitted delayed by the lookahead; count emitted samples to know which belong to padding.
        start = self.samples_out
        self.samples_out += wav.shape[-1]
        if self.frame_lengths is None:
            return wav
        sample_lengths = self.frame_lengths.to(wav.device) * self.model.hop_size
        return wav * frame_mask(sample_lengths, wav.shape[-1], start)
