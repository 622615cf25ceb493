"""Typed `data:` and `train:` sections of a unified training YAML (the `model:` section is holitok_slm.config's)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from holitok.dataclass_config import build_dataclass, read_config
from holitok_slm.config import UnifiedConfig

EXPORT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class DatasetSpec:
    """One latent store (written by data_prep.extract_latents) and the tasks it feeds."""

    name: str
    latents: str                   # store folder (relative paths: relative to the working directory)
    tasks: list[str] = field(default_factory=lambda: ["tts", "asr"])
    # Relative share among the datasets of the same task; None = proportional to the number of usable items.
    weight: float | None = None


@dataclass
class LatentDataConfig:
    datasets: list[DatasetSpec] = field(default_factory=list)
    task_ratio: dict[str, float] = field(default_factory=lambda: {"tts": 5.0, "asr": 1.0})  # paper: TTS:ASR near 5:1
    max_frames_per_batch: int = 6000   # padded latent frames per micro-batch per process (25 frames = 1 s)
    max_items_per_batch: int = 64
    max_frames_per_item: int = 750     # 30 s; longer items are skipped and reported
    min_frames_per_item: int = 8       # shorter than one prompt+target split is useless
    use_semantic_features: bool = False  # read precomputed "semantic" tensors (Unite with a frozen encoder)
    # Each rank opens only the shards rank, rank + world, ... of every store and draws only from them: start-up time and
    # memory per rank stay flat at 100K hours (~140K shards). Off: every rank indexes every shard and takes every
    # world-th item of a shared permutation (the exact-ratio default for small stores).
    shard_per_rank: bool = False
    # ASR items only: mask about this share of the latent frames in spans of up to asr_time_mask_span frames
    # (holitok_slm/train/augment.py; 0 = off, as in the paper's recipe).
    asr_time_mask_ratio: float = 0.0
    asr_time_mask_span: int = 10
    # Draw this many batches' worth of items at once and batch them sorted by length (holitok_slm/train/task_deck.py):
    # on the demo corpus 2 % of the padded frames are padding instead of 39 %. 0 = off (batches in draw order).
    sort_pool_batches: int = 0
    # TTS items only: this share follows another utterance of the same speaker in one sequence (its transcript before
    # the item's text, its audio before the item's audio), the way a voice prompt from another recording is laid out in
    # zero-shot cloning (holitok_slm/layout.py). 0 = off: every item is one utterance, as in the paper's recipe, and
    # cloning then reads a sentence boundary and a two-sentence text it never saw (docs/learning.md section 26).
    tts_prompt_share: float = 0.0

    def __post_init__(self) -> None:
        self.datasets = [d if isinstance(d, DatasetSpec) else build_dataclass(DatasetSpec, d, "data.datasets")
                         for d in self.datasets]
        for spec in self.datasets:
            bad = set(spec.tasks) - {"tts", "asr"}
            if bad:
                raise ValueError(f"data.datasets[{spec.name}].tasks: unknown {sorted(bad)} (use tts/asr)")
        if not 0 <= self.asr_time_mask_ratio < 1 or self.asr_time_mask_span < 1:
            raise ValueError(f"data.asr_time_mask_ratio must be in [0, 1) and data.asr_time_mask_span >= 1, got "
                             f"{self.asr_time_mask_ratio} and {self.asr_time_mask_span}")
        if self.sort_pool_batches < 0:
            raise ValueError(f"data.sort_pool_batches must be >= 0 (0 = off), got {self.sort_pool_batches}")
        if not 0 <= self.tts_prompt_share <= 1:
            raise ValueError(f"data.tts_prompt_share must be in [0, 1], got {self.tts_prompt_share}")
        if self.tts_prompt_share and self.use_semantic_features:
            raise ValueError("data.tts_prompt_share joins two utterances' latents; precomputed semantic features "
                             "(data.use_semantic_features) cannot be joined the same way: turn one of them off")
        if self.max_frames_per_batch < self.max_frames_per_item:
            raise ValueError(f"data.max_frames_per_batch ({self.max_frames_per_batch}) must be >= "
                             f"data.max_frames_per_item ({self.max_frames_per_item}) or long items never fit")


@dataclass
class TrainConfig:
    output_dir: str = "runs/unified"
    seed: int = 1234
    max_steps: int = 200000            # optimizer steps (paper: 200k for TTS)
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"      # bf16 | fp16 | no ; on CPU without bf16 units use "no"
    # AdamW. The paper's values are lost in our copy of its appendix; these are common LLM fine-tuning defaults.
    learning_rate: float = 1.0e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1.0e-8
    weight_decay: float = 0.01
    warmup_steps: int = 5000           # paper: 5000 warmup batches
    min_lr_ratio: float = 0.1          # cosine decays to learning_rate * min_lr_ratio
    # Learning rate of the flow head (DiT + condition bridge) as a multiple of learning_rate (not in the paper: 1
    # there). A small zero-initialised adaLN DiT learns far slower than the backbone: at 1e-3 it could not fit 671
    # patches even when handed a perfect condition, at 3e-3 it fitted them (docs/learning.md section 12).
    flow_head_lr_scale: float = 1.0
    grad_clip: float = 2.0             # paper
    deepspeed_config: str | None = None  # e.g. configs/deepspeed/zero2.json; or use `accelerate launch --use_deepspeed`
    log_every: int = 10
    save_every: int = 5000
    keep_last_checkpoints: int = 3
    export_model_in_checkpoints: bool = True  # also write save_pretrained() weights into every checkpoint
    # Precision of the exported final/ weights (float32 | float16 | bfloat16; checkpoints stay float32): a model that
    # ships in a repository with a size limit (weights/demo) can halve its file; loading widens to float32.
    export_dtype: str = "float32"
    # Paper Table 8 options.
    init_dit_from: str | None = None   # a TTS-only run's checkpoint or save_pretrained dir: copy its DiT head weights
    init_dit_prefixes: list[str] = field(default_factory=lambda: ["dit."])
    freeze_semantic_encoder: bool | None = None  # None keeps model.semantic_input.trainable
    # Train only the parameters whose names start with one of these (e.g. ["dit."]: a flow head learning new latent
    # channels after holitok_slm/widen.py, with everything that reads audio or writes text frozen); None = all.
    trainable_prefixes: list[str] | None = None
    # Robustness.
    max_consecutive_nonfinite: int = 20  # stop (with a checkpoint) after this many skipped non-finite steps in a row
    inject_nonfinite_at_steps: list[int] = field(default_factory=list)  # fault injection for tests only
    ddp_find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.mixed_precision not in ("bf16", "fp16", "no"):
            raise ValueError(f"train.mixed_precision must be bf16, fp16 or no, got {self.mixed_precision!r}")
        if self.export_dtype not in EXPORT_DTYPES:
            raise ValueError(f"train.export_dtype must be one of {sorted(EXPORT_DTYPES)}, got {self.export_dtype!r}")
        if self.flow_head_lr_scale <= 0:
            raise ValueError(f"train.flow_head_lr_scale must be > 0, got {self.flow_head_lr_scale}")


@dataclass
class TrainingRun:
    model: UnifiedConfig
    data: LatentDataConfig
    train: TrainConfig
    source: Path

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "data": asdict(self.data), "train": asdict(self.train)}


def load_training_run(path: str | Path, overrides: list[str] | None = None) -> TrainingRun:
    """A training YAML read the one way (holitok.dataclass_config.read_config: `inherit:`, `model: file.yaml`,
    overrides), then built strictly."""
    path = Path(path)
    doc = read_config(path, overrides)
    unknown = set(doc) - {"model", "data", "train"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level sections {sorted(unknown)}; expected model, data, train")
    return TrainingRun(model=UnifiedConfig.from_dict(doc.get("model") or {}),
                       data=build_dataclass(LatentDataConfig, doc.get("data") or {}, "data"),
                       train=build_dataclass(TrainConfig, doc.get("train") or {}, "train"), source=path)
