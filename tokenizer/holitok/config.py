"""Typed configuration of the HoliTok tokenizer and its semantic module, with the released presets."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Keys that the authors' config files carry but that only mattered during their training (or name features the
# released runtime never had). They are accepted, kept for round-tripping, and otherwise ignored.
TRAINING_ONLY_KEYS = (
    "type", "use_flow", "flow_hidden_channels", "quant_after_supervise_encoder", "quant_mean",
    "vq_downsample_factor", "use_invertible_downsample", "distill_wavlm", "distill_pitch", "distill_intensity",
    "distill_xvector", "sid_classifier", "use_supervise", "add_fm_noise", "min_var", "model_path",
)


@dataclass
class HoliTokConfig:
    """Architecture of the HoliTok VAE (encoder, LSTM bottleneck, BigVGAN-style causal decoder).

    Field names follow the authors' JSON so that their config files load unchanged.
    """

    sample_rate: int = 48000
    upsample_rates: list[int] = field(default_factory=lambda: [10, 6, 4, 2, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [20, 12, 8, 4, 4, 4])
    upsample_initial_channel: int = 1536
    resblock: str = "1"
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    downsample_rates: list[int] = field(default_factory=lambda: [2, 2, 2, 4, 6, 10])
    downsample_channels: list[int] = field(default_factory=lambda: [12, 24, 48, 96, 192, 384, 768])
    activation: str = "snakebeta"
    snake_logscale: bool = True
    latent_dim: int = 128
    use_vae: bool = True
    mi_num_layers: int = 4
    mi_skip: bool = True
    vae_type: str = "flow"
    causal: bool = True
    causal_encoder: bool = True
    num_encoder_lookahead: int = 2
    num_decoder_lookahead: int = 2
    fixed_filter: bool = True
    fixed_filter1: bool = False
    use_bias_at_final: bool = False
    use_tanh_at_final: bool = False
    use_vq: bool = False
    # Training-only keys from the authors' files, kept verbatim so save/load round-trips them.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.downsample_channels[0] != 12:
            problems.append("downsample_channels[0] must be 12 (the encoder stem width is fixed at 12)")
        if len(self.downsample_channels) != len(self.downsample_rates) + 1:
            problems.append("downsample_channels needs one more entry than downsample_rates")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            problems.append("upsample_rates and upsample_kernel_sizes differ in length")
        if any(k != 2 * u for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes)):
            problems.append("causal transposed convs need upsample_kernel_sizes == 2 * upsample_rates")
        if math.prod(self.upsample_rates) != math.prod(self.downsample_rates):
            problems.append("the product of upsample_rates must equal the product of downsample_rates")
        if self.resblock != "1":
            problems.append(f"resblock {self.resblock!r} is not supported (only AMPBlock1, '1')")
        if self.activation != "snakebeta":
            problems.append(f"activation {self.activation!r} is not supported (only 'snakebeta')")
        if not self.use_vae:
            problems.append("use_vae=false is not supported: every released HoliTok model has the LSTM bottleneck")
        if self.use_vq:
            problems.append("use_vq=true is not supported: the VQ path was never released")
        if self.vae_type not in ("flow", "gq"):
            problems.append(f"vae_type {self.vae_type!r} is unknown (expected 'flow' or 'gq')")
        if not (self.causal and self.causal_encoder):
            problems.append("only the causal configuration (causal=causal_encoder=true) is supported")
        if problems:
            raise ValueError("invalid HoliTok config: " + "; ".join(problems))

    @property
    def hop_size(self) -> int:
        return math.prod(self.upsample_rates)

    @property
    def bottleneck_dim(self) -> int:
        return 4 * self.latent_dim

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "HoliTokConfig":
        d = dict(d.get("model", d)) if isinstance(d.get("model"), dict) else dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in d.items() if k in names and k != "extra"}
        extra = dict(d.get("extra", {}))
        unknown = []
        for k, v in d.items():
            if k in names:
                continue
            if k in TRAINING_ONLY_KEYS:
                extra[k] = v
            else:
                unknown.append(k)
        if unknown:
            raise ValueError(f"unknown HoliTok config keys: {sorted(unknown)}")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}

    @classmethod
    def from_json(cls, path: str | Path) -> "HoliTokConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class SemanticConfig:
    """The causal semantic Transformer of HoliTok-Unite (the training-time supervision encoder)."""

    input_dim: int = 128
    hidden_size: int = 1536
    num_layers: int = 24
    num_heads: int = 16
    ffn_hidden_size: int = 6144
    causal: bool = True
    use_in_proj: bool = True

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SemanticConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown semantic config keys: {unknown}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FULL = {"flow_hidden_channels": 256, "use_flow": True, "type": "BigVGANVAEVQDS"}
_PRESETS: dict[str, dict[str, Any]] = {
    "HoliTok-Base": dict(_FULL),
    "HoliTok-Unite": dict(_FULL),
    # Same architecture at a size that runs in milliseconds: the layout of the authors' conformance model tiny_a.
    "tiny": dict(_FULL, downsample_channels=[12, 8, 12, 16, 24, 48, 96], upsample_initial_channel=128,
                 latent_dim=16, flow_hidden_channels=16),
}
_ALIASES = {"base": "HoliTok-Base", "holitok-base": "HoliTok-Base", "unite": "HoliTok-Unite",
            "holitok-unite": "HoliTok-Unite", "tiny": "tiny", "holitok-tiny": "tiny"}


def preset_names() -> list[str]:
    return list(_PRESETS)


def resolve_preset_name(name: str) -> str | None:
    """The canonical preset name for `name` (case-insensitive alias), or None if it is not a preset."""
    if name in _PRESETS:
        return name
    return _ALIASES.get(name.lower())


def get_preset_config(name: str) -> HoliTokConfig:
    canonical = resolve_preset_name(name)
    if canonical is None:
        raise KeyError(f"unknown HoliTok preset {name!r}; known: {preset_names()} (aliases: {sorted(_ALIASES)})")
    return HoliTokConfig.from_dict(_PRESETS[canonical])


def load_model_config(source: "str | Path | dict | HoliTokConfig") -> HoliTokConfig:
    """A config from a preset name, a JSON file (bare model config or experiment file with a `model` key), or a dict."""
    if isinstance(source, HoliTokConfig):
        return source
    if isinstance(source, dict):
        return HoliTokConfig.from_dict(source)
    if resolve_preset_name(str(source)) is not None:
        return get_preset_config(str(source))
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{source!r} is neither a preset ({preset_names()}) nor a config file")
    return HoliTokConfig.from_json(path)
