"""Typed configuration of tokenizer training (one YAML per stage), with strict loading and dotted overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import HoliTokConfig, get_preset_config
from ..dataclass_config import apply_override, build_dataclass, plain, read_config
from .discriminators import DiscriminatorConfig
from .flow import LatentFlowConfig
from .mel import MelLossConfig
from .phase_loss import PhaseLossConfig
from .spectrum_loss import SpectrumLossConfig

# Which loss terms exist in each stage. Weights for terms a stage does not have are an error, not silently unused.
STAGE_LOSS_TERMS = {
    1: ("mel", "adv", "fm"),
    2: ("mel", "adv", "fm", "kl"),
    3: ("mel", "adv", "fm", "kl", "wavlm", "xvector", "ce"),
}
# Terms any stage may add (not in the paper's recipe, so never in the defaults): the phase-derivative loss
# (phase_loss.py), for decoders that predict phase themselves, and the linear-frequency log-magnitude loss
# (spectrum_loss.py), which resolves the harmonics that the mel loss pools, and the pitch head's error (pitch.py),
# which makes the latents carry F0.
OPTIONAL_LOSS_TERMS = ("phase", "spectrum", "pitch")
# Table 7 of the paper; the KL weights are blank in our copy: 0.01 (Stage II, "weak") and 0.1 (Stage III, 10x) are
# our defaults, on a KL measured in nats per latent element (see flow.py).
DEFAULT_LOSS_WEIGHTS = {
    1: {"mel": 45.0, "adv": 1.0, "fm": 2.0},
    2: {"mel": 45.0, "adv": 1.0, "fm": 2.0, "kl": 0.01},
    3: {"mel": 45.0, "adv": 1.0, "fm": 2.0, "kl": 0.1, "wavlm": 1.0, "xvector": 1.0, "ce": 1.0},
}


@dataclass
class ModelSection:
    """The HoliTok architecture: a preset name plus field overrides (e.g. a smaller decoder)."""

    preset: str = "HoliTok-Base"
    overrides: dict[str, Any] = field(default_factory=dict)

    def build(self) -> HoliTokConfig:
        base = get_preset_config(self.preset).to_dict()
        return HoliTokConfig.from_dict({**base, **self.overrides})


@dataclass
class AudioDataConfig:
    """``train``/``valid``: a JSONL manifest (``audio`` path relative to the manifest, optional ``text``, ``emotion``,
    ``caption``, ``sound_event``) or a folder of audio files (a ``<name>.txt`` beside a file is its transcript)."""

    train: str = ""
    valid: str | None = None
    # Random crops of this length (Stages I-II: 9.6 s in the paper); null = whole utterances up to max_seconds.
    segment_seconds: float | None = 9.6
    max_seconds: float = 20.0
    batch_size: int = 16
    num_workers: int = 4
    # How many validation clips (capped at sample_seconds) are reconstructed for TensorBoard.
    num_samples: int = 2
    sample_seconds: float = 6.0


@dataclass
class OptimConfig:
    """AdamW for generator and discriminator (Table 7; blank entries filled with BigVGAN-v2's values)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.8, 0.99)
    eps: float = 1e-9
    weight_decay: float = 0.01
    grad_clip: float = 500.0
    warmup_steps: int = 1
    lr_decay: float = 0.9999996  # per optimizer step
    lr_floor: float = 1e-5


@dataclass
class StageOptions:
    # Stage II starts from a deterministic AE whose log-sigma head was never trained; it is reset to
    # weight 0 / bias init_log_std so the first samples stay on the AE's decoding manifold (null: keep as is).
    init_log_std: float | None = -4.0
    # Stage III: the decoder keeps training with the GAN objective (false: frozen like in Stage II).
    train_decoder: bool = True
    # Stage II only: the other way round. The encoder side (encoder, enc_mi_layer, pre_proj) is frozen and the
    # decoder side (post_proj, dec_mi_layer, decoder) trains on posterior samples, so the latents stay bit-identical:
    # a decoder fine-tuning (e.g. with the discriminators on) that a model trained on these latents can use as is.
    decoder_only: bool = False
    # Stage II only: everything trains on posterior samples with the KL (a VAE fine-tune of the Stage I model). Not
    # in the paper's Stage II, for small models: the decoder learns to read through the posterior's noise and the
    # encoder to keep the words above it, so a small generator's errors decode (docs/learning.md section 11).
    train_all: bool = False
    # Stages II-III: the mel (and GAN) losses decode a random window of this many seconds of each utterance's
    # sampled latents (null: the whole utterance). The encoder, the KL and the supervision still see every frame;
    # the decoder, the dearest part at 48 kHz, runs on a crop as in Stages I-II (a CPU budget, not in the paper).
    decode_crop_seconds: float | None = None
    # With decode_crop_seconds: the decoder also decodes up to this many seconds of the latents before the window
    # (as many as the utterance has), and the losses skip them. Why: the decoder is causal with ~0.45 s of
    # receptive field, so a crop decoded from nothing trains it on a history it never has at inference; the
    # shipped decoder read 0.4 s windows worse with their real history than from nothing. Measured: a decoder-only
    # fine-tune with cold crops fixed that as well as one with context did (docs/learning.md section 33).
    decode_context_seconds: float = 0.0
    # decoder_head 'harmonic' only: what the pulse train runs at while training. "predicted": the head's own F0, as
    # at inference; "tracker": the pitch tracker's F0 on voiced frames (the head's F0 still learns from the pitch
    # term), so the gains learn what a right pitch is worth before the head predicts one (docs/learning.md 32).
    harmonic_f0: str = "predicted"


@dataclass
class DistillConfig:
    """Stage III teachers, loaded with ``transformers`` from local directories (no downloads)."""

    wavlm_path: str | None = None
    wavlm_layer: int = 23  # hidden_states index: 0 = CNN features after projection, i = output of layer i
    xvector_path: str | None = None
    teacher_sample_rate: int = 16000
    normalize_teacher_input: bool = True  # zero-mean/unit-variance per utterance, as WavLM-Large's extractor does
    head_hidden: int = 512


@dataclass
class SupervisionConfig:
    """Stage III supervision network: causal semantic Transformer -> bridge -> Qwen2 decoder with task embeddings."""

    semantic: dict[str, Any] = field(default_factory=lambda: {"hidden_size": 1536, "num_layers": 24, "num_heads": 16,
                                                              "ffn_hidden_size": 6144, "causal": True})
    decoder_path: str | None = None  # local Qwen2(.5) directory; paper: Qwen2.5-0.5B
    decoder_config: dict[str, Any] | None = None  # or a Qwen2Config (random init), for tiny runs
    tokenizer: str = "bytes"  # a local HF tokenizer directory, or "bytes" (UTF-8 bytes, no files needed)
    freeze_decoder: bool = False
    tasks: list[str] = field(default_factory=lambda: ["asr", "emotion", "caption", "sound_event"])
    max_text_tokens: int = 256


@dataclass
class LoopConfig:
    max_steps: int = 500_000
    log_every: int = 50
    sample_every: int = 5000
    save_every: int = 5000
    keep_checkpoints: int = 3
    seed: int = 1234
    # The discriminators join after this many generator steps (0 = from the start, as in BigVGAN).
    adversarial_start_step: int = 0
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    resume: bool = True  # continue from the newest checkpoint in output_dir/checkpoints if there is one
    find_unused_parameters: bool = False
    progress_bar: bool = True
    # A non-finite loss skips its step; this many in a row stop the stage with a checkpoint (exit code 3).
    max_consecutive_nonfinite: int = 20
    inject_nonfinite_at_steps: list[int] = field(default_factory=list)  # fault injection for tests only


@dataclass
class TokenizerTrainConfig:
    stage: int = 1
    output_dir: str = "runs/tokenizer/stage1"
    # The previous stage's output dir (its final/ checkpoint), or any HoliTok checkpoint dir / model.pt.
    init_from: str | None = None
    model: ModelSection = field(default_factory=ModelSection)
    data: AudioDataConfig = field(default_factory=AudioDataConfig)
    loss_weights: dict[str, float] | None = None  # null: DEFAULT_LOSS_WEIGHTS[stage]
    mel_loss: MelLossConfig = field(default_factory=MelLossConfig)
    phase_loss: PhaseLossConfig = field(default_factory=PhaseLossConfig)
    spectrum_loss: SpectrumLossConfig = field(default_factory=SpectrumLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    flow: LatentFlowConfig = field(default_factory=LatentFlowConfig)
    stage_options: StageOptions = field(default_factory=StageOptions)
    distill: DistillConfig = field(default_factory=DistillConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self):
        if self.stage not in STAGE_LOSS_TERMS:
            raise ValueError(f"stage must be 1, 2 or 3, got {self.stage}")
        terms = STAGE_LOSS_TERMS[self.stage]
        if self.loss_weights is None:
            self.loss_weights = dict(DEFAULT_LOSS_WEIGHTS[self.stage])
        extra = sorted(set(self.loss_weights) - set(terms) - set(OPTIONAL_LOSS_TERMS))
        missing = sorted(set(terms) - set(self.loss_weights))
        if extra or missing:
            hint = " (Stage I is a deterministic autoencoder: it has no KL term)" if "kl" in extra else ""
            raise ValueError(f"loss_weights for stage {self.stage} must name exactly {list(terms)} "
                             f"(optional: {list(OPTIONAL_LOSS_TERMS)}); "
                             f"unexpected {extra}, missing {missing}{hint}")
        if self.distills and not (self.distill.wavlm_path and self.distill.xvector_path):
            raise ValueError("stage 3 needs distill.wavlm_path and distill.xvector_path (local teacher directories), "
                             "or loss_weights wavlm and xvector both 0 (no distillation: the paper's 'w/o distill')")
        if self.stage == 3 and not (self.supervision.decoder_path or self.supervision.decoder_config):
            raise ValueError("stage 3 needs supervision.decoder_path (a local Qwen2 directory) or "
                             "supervision.decoder_config")

    @property
    def distills(self) -> bool:
        """Stage III with representation distillation (teachers loaded); with both weights 0 it trains without."""
        return self.stage == 3 and (self.loss_weights["wavlm"] > 0 or self.loss_weights["xvector"] > 0)

    @property
    def final_dir(self) -> Path:
        return Path(self.output_dir) / "final"

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> TokenizerTrainConfig:
    """Read a stage YAML (or take ``data``), apply ``section.key=value`` overrides, validate, build the dataclasses.

    Relative paths inside the YAML stay relative to the working directory (the repository root by convention).
    """
    if data is None:
        if path is None:
            raise ValueError("load_config needs a YAML path or a data dict")
        data = read_config(path, overrides)
    else:
        data = dict(data)
        for assignment in overrides or []:
            apply_override(data, assignment)
    return build_dataclass(TokenizerTrainConfig, data, "config")


def save_config(config: TokenizerTrainConfig, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
