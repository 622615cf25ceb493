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


class StreamingEncoder:
    """Audio chunks [B, 1, n] (or [B, n]) -> posterior chunks [B, 2*D, k]."""

    def __init__(self, model, lengths: Tensor | None = None) -> None:
        self.model = model
        self.state: dict = {}
        self.frame_lengths = None if lengths is None else model.num_frames(torch.as_tensor(lengths))
        self.features_seen = 0
        self.finished = False

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
        return m._posterior_layout(m.pre_proj(h))

    @torch.no_grad()
    def step(self, audio) -> Tensor:
        if self.finished:
            raise RuntimeError("this stream was flushed; start a new one with model.stream_encoder()")
        x = as_model_input(audio, device=next(self.model.parameters()).device, allow_empty=True)
        enc = self.model.audio_encoder
        features = self._mask_features(enc.step_features(x, self.state))
        return self._bottleneck(enc.lookahead_conv.step(features, self.state))

    @torch.no_grad()
    def flush(self) -> Tensor:
        if self.finished:
            raise RuntimeError("flush() called twice")
        self.finished = True
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
        h = m.dec_mi_layer.step(m.post_proj(z).transpose(1, 2), self.state).transpose(1, 2)
        if self.frame_lengths is not None:
            h = h * frame_mask(self.frame_lengths.to(h.device), h.shape[-1], self.frames_seen)
        self.frames_seen += h.shape[-1]
        return self._mask_audio(m.decoder.step(h, self.state))

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
