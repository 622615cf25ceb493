"""HoliTok: the tokenizer model and its public API (encode, decode, reconstruct, streaming, from_pretrained)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .bottleneck import MIBlock
from .checkpoint import load_holitok, save_safetensors_dir
from .config import HoliTokConfig, load_model_config
from .decoder import AMPBlock1, Decoder
from .encoder import AudioEncoder, ResidualUnit
from .istft_head import ISTFTHead
from .layers import Conv1d, ConvTranspose1d, fold_weight_norm, frame_mask, unfold_weight_norm
from .pitch_latents import PITCH_LOG_STD, from_channels, measure, to_channels

# Inference decodes/encodes in chunks of this many latent frames (2 s) through the streaming path: identical output,
# flat memory, and much faster on CPU than one giant pass whose activations fall out of cache.
DEFAULT_CHUNK_FRAMES = 50
RESIDUAL_BRANCH_INIT_GAIN = 0.1


class HoliTok(nn.Module):
    """48 kHz mono audio <-> [B, latent_dim, T] latents at sample_rate / hop_size frames per second."""

    def __init__(self, config: HoliTokConfig | str | dict | Path = "HoliTok-Base") -> None:
        super().__init__()
        self.config = load_model_config(config)
        c = self.config
        self.audio_encoder = AudioEncoder(c)
        self.enc_mi_layer = MIBlock(c)
        self.dec_mi_layer = MIBlock(c)
        self.pre_proj = nn.Conv1d(c.latent_dim, 2 * c.latent_dim, 1)
        self.post_proj = nn.Conv1d(c.latent_dim, c.latent_dim, 1)
        self.decoder = Decoder(c)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Variance-preserving init for training from scratch (loading a checkpoint overwrites it all).

        PyTorch's default conv init shrinks activations by ~1/sqrt(3) per layer: after the encoder's 40 convs the
        time-varying part of the signal is gone, the decoder learns to ignore its latents and training converges to
        the corpus's average spectrum. Kaiming-normal weights (LeakyReLU gain) with zero biases keep it alive.
        """
        encoder_convs = {id(m) for m in self.audio_encoder.modules()}
        for module in self.modules():
            if isinstance(module, (Conv1d, ConvTranspose1d)) and not getattr(module, "zero_init", False):
                # LeakyReLU(0.2) follows the encoder's convs; the decoder's are linear maps between snake activations
                gain = math.sqrt(2.0 / (1 + 0.2 ** 2)) if id(module) in encoder_convs else 1.0
                weight = module.get_weight().detach()
                fresh = torch.empty_like(weight)
                # fan_in is dim 1 * kernel for convs, dim 0 * kernel / stride for transposed convs
                fan_in = (weight.shape[0] * weight.shape[2] // module.stride if isinstance(module, ConvTranspose1d)
                          else weight.shape[1] * weight.shape[2])
                fresh.normal_(0.0, gain / math.sqrt(fan_in))
                with torch.no_grad():
                    if module.has_weight_norm:
                        module.weight_v.copy_(fresh)
                        module.weight_g.copy_(fresh.norm(dim=tuple(range(1, fresh.dim())), keepdim=True))
                    else:
                        module.weight.copy_(fresh)
                    if module.bias is not None:
                        module.bias.zero_()
        # Residual branches start near zero so each block begins close to the identity (no growth through depth).
        branch_outputs = [unit._modules["5"] for unit in self.modules() if isinstance(unit, ResidualUnit)]
        branch_outputs += [conv for block in self.modules() if isinstance(block, AMPBlock1) for conv in block.convs2]
        for head in self.modules():
            if isinstance(head, ISTFTHead):
                head.shrink_init()
        with torch.no_grad():
            for conv in branch_outputs:
                (conv.weight_v if conv.has_weight_norm else conv.weight).mul_(RESIDUAL_BRANCH_INIT_GAIN)
                if conv.has_weight_norm:
                    conv.weight_g.mul_(RESIDUAL_BRANCH_INIT_GAIN)

    # ---- facts -------------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_size(self) -> int:
        return self.config.hop_size

    encoder_hop_size = hop_size

    @property
    def latent_dim(self) -> int:
        """Channels per latent frame: the learnt ones, then any pitch channels (config.pitch_latents)."""
        return self.config.latent_dim + self.config.pitch_channels

    @property
    def pitch_channels(self) -> int:
        return self.config.pitch_channels

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_size

    @property
    def latency_ms(self) -> dict[str, float]:
        """Algorithmic latency (lookahead only, compute excluded): frame t needs audio up to the end of frame t+2."""
        frame_ms = 1000.0 * self.hop_size / self.sample_rate
        enc, dec = self.config.num_encoder_lookahead, self.config.num_decoder_lookahead
        return {"encoder": enc * frame_ms, "decoder": dec * frame_ms, "end_to_end": (enc + dec) * frame_ms,
                "frame": frame_ms}

    def num_frames(self, num_samples: int | Tensor) -> int | Tensor:
        return -(-num_samples // self.hop_size)

    def fold_weight_norm(self) -> "HoliTok":
        fold_weight_norm(self)
        return self

    def unfold_weight_norm(self) -> "HoliTok":
        unfold_weight_norm(self)
        return self

    # ---- differentiable core ------------------------------------------------------------------------------------
    def forward_posterior(self, audio: Tensor, lengths: Tensor | None = None) -> Tensor:
        """[B, 1, L] audio -> [B, 2*D, ceil(L/hop)] posterior = concat(mu, log_std). Padding never changes valid frames."""
        h = self.audio_encoder.features(audio)
        if lengths is not None:
            h = h * frame_mask(self.num_frames(lengths.to(h.device)), h.shape[-1])
        h = self.audio_encoder.lookahead_conv(h)
        h = self.enc_mi_layer(h.transpose(1, 2)).transpose(1, 2)
        posterior = self._posterior_layout(self.pre_proj(h))
        if not self.pitch_channels:
            return posterior
        per_frame = self.pitch_channels // 2
        log2_f0, voiced, _ = measure(audio, self.sample_rate, self.config.istft_hop, self.config.istft_n_fft, 0,
                                     posterior.shape[-1] * per_frame)
        return self.with_pitch_channels(posterior, to_channels(log2_f0, voiced, per_frame))

    @staticmethod
    def with_pitch_channels(posterior: Tensor, channels: Tensor) -> Tensor:
        """[B, 2D, T] learnt posterior + [B, P, T] pitch channels -> [B, 2(D + P), T]: the pitch as means whose log
        sigma is PITCH_LOG_STD, so sampling the posterior leaves it as measured."""
        mu, log_std = posterior.chunk(2, dim=1)
        return torch.cat([mu, channels.to(mu), log_std, torch.full_like(channels, PITCH_LOG_STD).to(mu)], dim=1)

    def split_latents(self, latents: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """[B, latent_dim, T] -> (the learnt channels, the pitch track (log2 F0, voiced) per head frame or None)."""
        if not self.pitch_channels:
            return latents, None
        learnt = self.config.latent_dim
        return latents[:, :learnt], from_channels(latents[:, learnt:])

    def _posterior_layout(self, post: Tensor) -> Tensor:
        if self.config.vae_type == "gq":  # that variant predicts log-variance; expose log_std everywhere
            mu, log_var = post.chunk(2, dim=1)
            post = torch.cat([mu, 0.5 * log_var], dim=1)
        return post

    def forward_decode(self, latents: Tensor, lengths: Tensor | None = None, with_pitch: bool = False,
                       log2_f0: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        """[B, D, T] latents -> [B, 1, T*hop] waveform in [-1, 1]. `lengths` are in frames. `with_pitch` (decoder_head
        'harmonic'): also the head's F0 and voicing prediction [B, 2, T * hop / istft_hop]; `log2_f0` [B, T * hop /
        istft_hop]: the F0 its pulse train runs at instead of the predicted one (training only; decoder.py)."""
        latents, track = self.split_latents(latents)
        h = self.dec_mi_layer(self.post_proj(latents).transpose(1, 2)).transpose(1, 2)
        mask = None if lengths is None else frame_mask(lengths.to(h.device), h.shape[-1])
        out = self.decoder(h if mask is None else h * mask, with_pitch, log2_f0, track)
        audio, pitch = out if with_pitch else (out, None)
        if mask is not None:
            audio = audio * mask.repeat_interleave(self.hop_size, dim=-1)
        return (audio, pitch) if with_pitch else audio

    # ---- inference API (the authors' names and layouts) ----------------------------------------------------------
    def _audio_batch(self, audio: Any) -> Tensor:
        from .audio import as_model_input
        return as_model_input(audio, device=self._device())

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def encode_posterior(self, audio: Any, *, lengths: Tensor | None = None, deg_sr: int | None = None,
                         chunk_frames: int | None = DEFAULT_CHUNK_FRAMES) -> Tensor:
        """Audio [L], [B, L] or [B, 1, L] at 48 kHz -> posterior [B, 2*D, T]. Long inputs stream in chunks."""
        x = self._audio_batch(audio)
        if chunk_frames and x.shape[-1] > chunk_frames * self.hop_size * 4:
            enc = self.stream_encoder(lengths=lengths)
            step = chunk_frames * self.hop_size
            parts = [enc.step(x[..., i: i + step]) for i in range(0, x.shape[-1], step)]
            return torch.cat(parts + [enc.flush()], dim=-1)
        return self.forward_posterior(x, lengths)

    @staticmethod
    def posterior_mean(posterior: Tensor) -> Tensor:
        return posterior.chunk(2, dim=1)[0]

    @staticmethod
    def sample_posterior(posterior: Tensor, *, noise_scale: float = 1.0,
                         generator: torch.Generator | None = None) -> Tensor:
        """mu + eps * exp(log_std) * noise_scale (the second half of the posterior is log sigma, not log variance)."""
        mu, log_std = posterior.chunk(2, dim=1)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * log_std.exp() * noise_scale

    @torch.no_grad()
    def encode(self, audio: Any, *, sample: bool = False, noise_scale: float = 1.0,
               generator: torch.Generator | None = None, lengths: Tensor | None = None,
               deg_sr: int | None = None) -> Tensor:
        post = self.encode_posterior(audio, lengths=lengths)
        if sample:
            return self.sample_posterior(post, noise_scale=noise_scale, generator=generator)
        return self.posterior_mean(post)

    @torch.no_grad()
    def decode(self, latents: Tensor, *, do_sample: bool = False, noise_scale: float = 1.0,
               channel_last: bool = False, lengths: Tensor | None = None, generator: torch.Generator | None = None,
               chunk_frames: int | None = DEFAULT_CHUNK_FRAMES) -> Tensor:
        """[B, D, T] latents (or a [B, 2D, T] posterior with do_sample=True) -> [B, 1, T*hop] waveform."""
        z = torch.as_tensor(latents, device=self._device(), dtype=torch.float32)
        if z.dim() == 2:
            z = z.unsqueeze(0)
        if channel_last:
            z = z.transpose(1, 2)
        expected = 2 * self.latent_dim if do_sample else self.latent_dim
        if z.dim() != 3 or z.shape[1] != expected:
            what = "posterior [B, 2D, T]" if do_sample else "latents [B, D, T]"
            raise ValueError(f"decode expects {what} with D={self.latent_dim}, got {tuple(latents.shape)}"
                             f"{' (channel_last)' if channel_last else ''}")
        if not torch.isfinite(z).all():
            raise ValueError("latents contain NaN or inf")
        if do_sample:
            z = self.sample_posterior(z, noise_scale=noise_scale, generator=generator)
        if chunk_frames and z.shape[-1] > chunk_frames:
            dec = self.stream_decoder(lengths=lengths)
            parts = [dec.step(z[..., i: i + chunk_frames]) for i in range(0, z.shape[-1], chunk_frames)]
            return torch.cat(parts + [dec.flush()], dim=-1)
        return self.forward_decode(z, lengths)

    @torch.no_grad()
    def reconstruct(self, audio: Any, *, sample: bool = True, noise_scale: float = 1.0,
                    generator: torch.Generator | None = None, deg_sr: int | None = None) -> Tensor:
        latents = self.encode(audio, sample=sample, noise_scale=noise_scale, generator=generator)
        return self.decode(latents)

    def forward(self, audio: Tensor, **kwargs) -> Tensor:
        return self.reconstruct(audio, **kwargs)

    # ---- streaming ------------------------------------------------------------------------------------------------
    def stream_encoder(self, lengths: Tensor | None = None):
        from .streaming import StreamingEncoder  # streaming.py builds on this module: imported when first used
        return StreamingEncoder(self, lengths=lengths)

    def stream_decoder(self, lengths: Tensor | None = None):
        from .streaming import StreamingDecoder
        return StreamingDecoder(self, lengths=lengths)

    # ---- persistence ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Our format: model.safetensors (weight norm kept as weight_g/weight_v) + config.json."""
        save_safetensors_dir(self, directory, {"holitok": self.config.to_dict()})

    @classmethod
    def from_pretrained(cls, source: str | Path | dict | HoliTokConfig = "HoliTok-Unite",
                        checkpoint: str | Path | None = None, *, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, fold_weight_norm: bool = True,
                        local_files_only: bool = False, cache_dir: str | Path | None = None,
                        repo_id: str | None = None, revision: str | None = None, **_ignored) -> "HoliTok":
        """Load a model from our directory, the authors' model.pt (+ config.json or preset), or a preset name.

        Accepted `source`: a directory saved by `save_pretrained`; a directory or path of an authors' `model.pt`;
        a preset name (checkpoint from `checkpoint`, the local cache, or the hub unless `local_files_only`);
        a config dict/JSON path together with `checkpoint`.
        """
        model = load_holitok(cls, source, checkpoint, local_files_only=local_files_only, cache_dir=cache_dir,
                             repo_id=repo_id, revision=revision)
        if fold_weight_norm:
            model.fold_weight_norm()
        model.eval()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device=device, dtype=dtype)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
