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
    # Ours, not the authors' (their files never carry these keys): "waveform" ends the decoder in conv_post at the
    # full sample rate, as every released model does; "istft" stops upsampling at hop_size / istft_hop frames per
    # second and renders each frame's spectrum (istft_head.py), for the small CPU presets; "harmonic" adds a pulse
    # train at a predicted F0 to that spectrum (harmonic_head.py).
    decoder_head: str = "waveform"
    # decoder_head "harmonic" only: "add" puts the pulse train beside the istft spectrum; "voicing" also scales the
    # istft spectrum by 1 - voicing, so voiced frames must come from the pulse train (harmonic_head.py).
    harmonic_mix: str = "add"
    istft_n_fft: int = 0
    # decoder_head "istft"/"harmonic": the width of a two-layer branch beside the head's linear projection, which
    # starts at zero (istft_head.py, HiddenBranch); 0 = none, the linear head alone.
    istft_hidden: int = 0
    # decoder_head "istft"/"harmonic": "absolute" reads each frame's phase from the head, "advance" sums per-frame
    # phase advances over the frames (istft_head.py says why).
    istft_phase: str = "absolute"
    # decoder_head "istft": F0 and voicing from a pitch tracker as extra latent channels after the learnt ones, and
    # voiced frames drawn on a harmonic comb at that F0 (pitch_latents.py says why and the layout).
    pitch_latents: bool = False
    # pitch_latents: unvoiced head frames within this many frames of a voiced one are drawn on the comb too, at the
    # nearest voiced frame's F0. The tracker calls the frames where voicing starts and stops unvoiced, and those are
    # where the resynthesis lost most PESQ (docs/learning.md sections 36-37); 0 = the tracker's voicing as it is.
    pitch_voicing_dilation: int = 0
    # Likewise for the encoder: "waveform" starts with the 12-channel conv stem at 48 kHz; "stft" starts with a fixed
    # causal DFT every frontend_hop samples (stft_frontend.py), then the downsample_rates ladder.
    encoder_frontend: str = "waveform"
    frontend_hop: int = 1
    frontend_n_fft: int = 0
    # A second, longer window over the low bins, so the encoder sees each harmonic (stft_frontend.py); 0 = none.
    frontend_long_n_fft: int = 0
    frontend_long_max_hz: float = 2000.0
    # Training-only keys from the authors' files, kept verbatim so save/load round-trips them.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.encoder_frontend == "waveform":
            if self.downsample_channels[0] != 12:
                problems.append("downsample_channels[0] must be 12 (the encoder stem width is fixed at 12)")
            if self.frontend_hop != 1:
                problems.append("frontend_hop only applies to encoder_frontend 'stft'")
            if self.frontend_long_n_fft:
                problems.append("frontend_long_n_fft only applies to encoder_frontend 'stft'")
        elif self.encoder_frontend == "stft":
            if self.frontend_n_fft < self.frontend_hop or self.frontend_hop < 1:
                problems.append(f"encoder_frontend 'stft' needs frontend_n_fft >= frontend_hop >= 1, got "
                                f"{self.frontend_n_fft} and {self.frontend_hop}")
        else:
            problems.append(f"encoder_frontend {self.encoder_frontend!r} is unknown (expected 'waveform' or 'stft')")
        if len(self.downsample_channels) != len(self.downsample_rates) + 1:
            problems.append("downsample_channels needs one more entry than downsample_rates")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            problems.append("upsample_rates and upsample_kernel_sizes differ in length")
        if any(k != 2 * u for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes)):
            problems.append("causal transposed convs need upsample_kernel_sizes == 2 * upsample_rates")
        if self.decoder_head == "waveform":
            if math.prod(self.upsample_rates) != self.hop_size:
                problems.append("the product of upsample_rates must equal the hop size (the product of downsample_rates)")
        elif self.decoder_head in ("istft", "harmonic"):
            if self.hop_size % math.prod(self.upsample_rates):
                problems.append("with decoder_head 'istft' the product of upsample_rates must divide the hop size")
            elif self.istft_n_fft < 2 * self.istft_hop or self.istft_n_fft % self.istft_hop:
                problems.append(f"istft_n_fft must be a multiple (>= 2) of the head's hop {self.istft_hop}, "
                                f"got {self.istft_n_fft}")
        else:
            problems.append(f"decoder_head {self.decoder_head!r} is unknown (expected 'waveform', 'istft' or "
                            f"'harmonic')")
        if self.istft_hidden < 0 or (self.istft_hidden and self.decoder_head == "waveform"):
            problems.append(f"istft_hidden must be >= 0 and needs decoder_head 'istft' or 'harmonic', got "
                            f"{self.istft_hidden} with {self.decoder_head!r}")
        if self.istft_phase not in ("absolute", "advance"):
            problems.append(f"istft_phase {self.istft_phase!r} is unknown (expected 'absolute' or 'advance')")
        elif self.istft_phase != "absolute" and self.decoder_head == "waveform":
            problems.append("istft_phase only applies to decoder_head 'istft' or 'harmonic'")
        if self.pitch_latents and (self.decoder_head != "istft" or self.hop_size % self.istft_hop
                                   or self.sample_rate % 16000):
            problems.append("pitch_latents needs decoder_head 'istft' (whole head frames per latent frame) and a "
                            "sample rate that is a multiple of 16 kHz (the pitch tracker's rate)")
        if self.pitch_voicing_dilation < 0 or (self.pitch_voicing_dilation and not self.pitch_latents):
            problems.append(f"pitch_voicing_dilation must be >= 0 and needs pitch_latents, got "
                            f"{self.pitch_voicing_dilation} with pitch_latents={self.pitch_latents}")
        elif self.pitch_voicing_dilation > self.num_decoder_lookahead * self.hop_size // max(1, self.istft_hop):
            # a stream widens each frame from the frames conv_pre's lookahead keeps queued (decoder.py)
            problems.append(f"pitch_voicing_dilation {self.pitch_voicing_dilation} is more than the decoder's "
                            f"lookahead ({self.num_decoder_lookahead} latent frames) holds")
        if self.harmonic_mix not in ("add", "voicing"):
            problems.append(f"harmonic_mix {self.harmonic_mix!r} is unknown (expected 'add' or 'voicing')")
        elif self.harmonic_mix != "add" and self.decoder_head != "harmonic":
            problems.append("harmonic_mix only applies to decoder_head 'harmonic'")
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
        return self.frontend_hop * math.prod(self.downsample_rates)

    @property
    def istft_hop(self) -> int:
        """Samples per output frame of the istft head (the upsampling the decoder's stages leave to it)."""
        return self.hop_size // math.prod(self.upsample_rates)

    @property
    def pitch_channels(self) -> int:
        """Latent channels after the learnt latent_dim ones that carry F0 and voicing (0 without pitch_latents)."""
        return 2 * (self.hop_size // self.istft_hop) if self.pitch_latents else 0

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
        # The authors' layout: their files (and runtime) know none of our keys, so they appear only when used.
        if self.decoder_head == "waveform":
            del d["decoder_head"], d["istft_n_fft"]
        if self.decoder_head != "harmonic":
            del d["harmonic_mix"]
        if self.encoder_frontend == "waveform":
            del d["encoder_frontend"], d["frontend_hop"], d["frontend_n_fft"]
        if not self.frontend_long_n_fft:
            del d["frontend_long_n_fft"], d["frontend_long_max_hz"]
        if not self.istft_hidden:
            del d["istft_hidden"]
        if self.istft_phase == "absolute":
            del d["istft_phase"]
        if not self.pitch_latents:
            del d["pitch_latents"]
        if not self.pitch_voicing_dilation:
            del d["pitch_voicing_dilation"]
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
    # Ours, for training on a laptop CPU (docs/learning.md): STFT front end at 100 Hz -> one x4 stage -> 25 Hz x 64;
    # decoder x4 to 100 Hz and an inverse-STFT head, so no layer runs at 48 kHz. 7.6M parameters.
    "cpu-small": dict(_FULL, latent_dim=64, mi_num_layers=2, flow_hidden_channels=64,
                      encoder_frontend="stft", frontend_hop=480, frontend_n_fft=960,
                      downsample_rates=[4], downsample_channels=[160, 192],
                      upsample_rates=[4], upsample_kernel_sizes=[8], upsample_initial_channel=384,
                      resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
                      decoder_head="istft", istft_n_fft=1920),
}
_ALIASES = {"base": "HoliTok-Base", "holitok-base": "HoliTok-Base", "unite": "HoliTok-Unite",
            "holitok-unite": "HoliTok-Unite", "tiny": "tiny", "holitok-tiny": "tiny", "cpu-small": "cpu-small"}


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
