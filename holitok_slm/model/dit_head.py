"""DiT flow-matching head: velocity of the next latent patch given the LLM condition, the previous patch and t;
its training objective and its Euler sampler (sway-sampled time grid, batched CFG, temperature) side by side."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import DiTConfig
from .layers import FeedForward, SelfAttention


class TimestepEmbedding(nn.Module):
    """Sinusoidal features of t in [0, 1] (scaled by 1000 like DiT) followed by a two-layer MLP."""

    def __init__(self, frequency_dim: int, hidden_size: int):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        angles = 1000.0 * t.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """Bidirectional transformer layer with adaLN-Zero modulation by (condition + time)."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_hidden_size: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads)
        self.ffn_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ffn = FeedForward(hidden_size, ffn_hidden_size)
        # Zero init: every block starts as the identity, which keeps early flow training stable.
        self.modulation = nn.Linear(hidden_size, 6 * hidden_size)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(conditioning)).chunk(6, dim=-1)
        x = x + gate1[:, None] * self.attn(_modulate(self.attn_norm(x), shift1, scale1))
        return x + gate2[:, None] * self.ffn(_modulate(self.ffn_norm(x), shift2, scale2))


class DiTHead(nn.Module):
    """Predicts the flow velocity of one latent patch.

    The sequence is [condition + time, previous patch (clean), noisy patch] with bidirectional attention
    (DiTAR/VoxCPM in-context design); the same (condition + time) vector also drives adaLN-Zero in every
    block, which is what Table 4's 345M implies (18 x (attention + FFN 4096 + 6-way modulation)).
    Time runs from 0 (noise) to 1 (data); the target velocity is data - noise.
    """

    def __init__(self, cfg: DiTConfig, latent_dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.hidden_size = cfg.hidden_size
        self.latent_in = nn.Linear(latent_dim, cfg.hidden_size)  # shared by history and noisy frames
        self.position = nn.Parameter(torch.zeros(1, 1 + 2 * patch_size, cfg.hidden_size))
        self.time_embed = TimestepEmbedding(cfg.time_embed_dim, cfg.hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(cfg.hidden_size, cfg.num_heads, cfg.ffn_hidden_size) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(cfg.hidden_size, 2 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, latent_dim)
        nn.init.normal_(self.position, std=0.02)
        for layer in (self.final_modulation, self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, history: torch.Tensor,
                frame_text: torch.Tensor | None = None) -> torch.Tensor:
        """noisy, history [M, P, D]; t [M]; condition [M, H] (zeros = unconditional); frame_text [M, P, H]: what each
        noisy frame's token adds (model.frame_pointer; zeros = unconditional) -> velocity [M, P, D]."""
        conditioning = condition + self.time_embed(t)
        frames = self.latent_in(noisy)
        if frame_text is not None:
            frames = frames + frame_text.to(frames.dtype)
        x = torch.cat([conditioning[:, None], self.latent_in(history), frames], dim=1) + self.position
        for block in self.blocks:
            x = block(x, conditioning)
        shift, scale = self.final_modulation(F.silu(conditioning)).chunk(2, dim=-1)
        return self.out(_modulate(self.final_norm(x[:, -self.patch_size:]), shift, scale))

    def flow_matching_errors(self, target: torch.Tensor, condition: torch.Tensor, history: torch.Tensor,
                             time_mu: float, time_sigma: float, cfg_dropout: float = 0.0,
                             frame_text: torch.Tensor | None = None,
                             channel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """The training objective (the sampler's counterpart: sample_patch below): squared error
        per frame [M, P] of the predicted velocity at a logit-normal t, on the path noise -> target, averaged over the
        channels (each weighed by `channel_weights` [C] where given). In training,
        a `cfg_dropout` share of the conditions (and their frame_text) is zeroed (the unconditional branch of
        classifier-free guidance)."""
        if self.training and cfg_dropout > 0:
            keep = torch.rand(condition.shape[0], device=condition.device) >= cfg_dropout
            condition = condition * keep[:, None].to(condition.dtype)
            if frame_text is not None:
                frame_text = frame_text * keep[:, None, None].to(frame_text.dtype)
        t = torch.sigmoid(torch.randn(target.shape[0], device=target.device) * time_sigma + time_mu)
        noise = torch.randn_like(target)
        noisy = (1 - t)[:, None, None] * noise + t[:, None, None] * target
        predicted = self(noisy, t, condition, history, frame_text)
        errors = (predicted.float() - (target - noise).float()).pow(2)
        return (errors if channel_weights is None else errors * channel_weights).mean(-1)

    def guided_velocity(self, noisy: torch.Tensor, t: torch.Tensor, condition: torch.Tensor, history: torch.Tensor,
                        cfg_strength: float, text_free_condition: torch.Tensor | None = None,
                        text_cfg_strength: float = 0.0, frame_text: torch.Tensor | None = None) -> torch.Tensor:
        """Classifier-free guidance, every branch in one batched call: v_c + w (v_c - v_u) + w_text (v_c - v_t).

        The unconditional branch zeroes only the LLM condition and its frame_text and keeps the history patch, as in
        training; the text-free one (v_t, only with `text_free_condition`) reads the condition of the same audio
        without its text (and no frame_text).
        """
        conditions, texts = [condition], [frame_text]
        if cfg_strength != 0:
            conditions.append(torch.zeros_like(condition))
            texts.append(None)
        if text_cfg_strength != 0:
            if text_free_condition is None:
                raise ValueError("text_cfg_strength needs the text-free branch's condition")
            conditions.append(text_free_condition)
            texts.append(None)
        if len(conditions) == 1:
            return self(noisy, t, condition, history, frame_text)
        k = len(conditions)
        stacked = None if frame_text is None else torch.cat(
            [text if text is not None else torch.zeros_like(frame_text) for text in texts])
        branches = self(torch.cat([noisy] * k), torch.cat([t] * k), torch.cat(conditions),
                        torch.cat([history] * k), stacked).chunk(k)
        velocity = branches[0]
        if cfg_strength != 0:
            velocity = velocity + cfg_strength * (branches[0] - branches[1])
        if text_cfg_strength != 0:
            velocity = velocity + text_cfg_strength * (branches[0] - branches[-1])
        return velocity


def sway_timesteps(steps: int, sway_coef: float, device: torch.device | None = None) -> torch.Tensor:
    """steps + 1 times from 0 (noise) to 1 (data); sway_coef < 0 spends more steps near the noise end (F5-TTS)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.linspace(0, 1, steps + 1, device=device)
    if sway_coef:
        t = t + sway_coef * (torch.cos(math.pi / 2 * t) - 1 + t)
    return t


@torch.no_grad()
def sample_patch(dit: DiTHead, condition: torch.Tensor, history: torch.Tensor, noise: torch.Tensor, steps: int = 10,
                 cfg_strength: float = 2.0, sway_coef: float = -1.0, text_free_condition: torch.Tensor | None = None,
                 text_cfg_strength: float = 0.0, frame_text: torch.Tensor | None = None) -> torch.Tensor:
    """Integrates dx/dt = v(x, t) from `noise` (already scaled by the temperature) to a normalised latent patch.

    condition [B, H_dit] (bridge output), history [B, P, D] (previous patch, normalised), noise [B, P, D];
    text_free_condition [B, H_dit]: the bridge output without the text (guidance toward the text:
    DiTHead.guided_velocity); frame_text [B, P, H_dit]: the frames' text (model.frame_pointer).
    """
    times = sway_timesteps(steps, sway_coef, noise.device)
    x = noise
    for i in range(steps):
        t = times[i].expand(x.shape[0])
        velocity = dit.guided_velocity(x, t, condition, history, cfg_strength, text_free_condition, text_cfg_strength,
                                       frame_text)
        x = x + (times[i + 1] - times[i]) * velocity
    return x
