"""Typed settings of the one-command demo pipeline (`configs/demo/<preset>.yaml`): corpus size, training lengths."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from holitok.dataclass_config import read_config

REPO_ROOT = Path(__file__).resolve().parents[1]
PRESET_DIR = REPO_ROOT / "configs" / "demo"


@dataclass
class CorpusSettings:
    preset: str = "default"                          # data_prep.synth_corpus preset
    train_utterances_per_voice: int | None = None    # overrides the preset (scales the hours)
    train_sentence_pool: int | None = None           # overrides the preset (distinct training sentences)
    vocabulary: str | None = None                    # overrides the preset: "base" (447 words) or "large" (~1600)
    # A second corpus of the same voices and size over another vocabulary (e.g. "large"), rendered into
    # OUT/corpus_<vocabulary> and read by steps 4 and 5 beside the first (TTS and ASR; docs/learning.md section 28).
    # The tokenizer, the aligner and the report use the first corpus only. None: no second corpus.
    second_vocabulary: str | None = None


@dataclass
class TokenizerStage:
    config: str                                      # a stage YAML under configs/tokenizer/
    set: dict[str, Any] = field(default_factory=dict)  # dotted keys -> values, e.g. {"train.max_steps": 300}


@dataclass
class TokenizerSettings:
    stages: list[TokenizerStage] = field(default_factory=list)
    # Training processes (CPU: gloo DDP through `accelerate launch --multi_gpu`, one thread each; GPU: one per GPU).
    processes: int = 1


@dataclass
class LatentSettings:
    batch_size: int = 1
    shard_size: int = 512
    # A second store of the same utterances, each played faster by a factor from this [low, high] range
    # (data_prep.extract_latents --speed_range), read by ASR only: more voices to learn to read (docs/learning.md
    # section 27). None: no such store.
    asr_speed_range: list[float] | None = None
    asr_speed_seed: int = 1
    # A channel-perturbed store, also read by ASR only (data_prep.extract_latents --bandwidths_khz / --snr_db: each
    # utterance band-limited to one of these bandwidths, 4 kHz being the telephone band, with white noise at an SNR
    # from asr_channel_snr_db), made from the second corpus when there is one (corpus.second_vocabulary), else the
    # first, with asr_speed_range's speed change on top (seed asr_speed_seed + 1). docs/learning.md section 28.
    asr_channel_bandwidths_khz: list[float] | None = None
    asr_channel_snr_db: list[float] | None = None


@dataclass
class UnifiedSettings:
    config: str = "configs/unified/train_tiny.yaml"
    set: dict[str, Any] = field(default_factory=dict)  # --set overrides for train_unified.py
    processes: int = 1                                 # as TokenizerSettings.processes


@dataclass
class RefineSettings:
    """An optional second unified stage (docs/learning.md section 24): a CTCAligner trained on the latents
    (data_prep/train_aligner.py), the store force-aligned with it (data_prep/align_latents.py), then the unified
    model continued from step 4's weights with `set` on top of step 4's config. No `set`: no such stage."""
    set: dict[str, Any] = field(default_factory=dict)  # --set overrides for the continued run, e.g. a forced pointer
    aligner_steps: int = 3000
    aligner_lr: float = 2e-3
    aligner_held_out: int = 32  # last items of the store kept out of the aligner's training, to report its reading

    @property
    def enabled(self) -> bool:
        return bool(self.set)


@dataclass
class ReportSettings:
    per_voice: int = 8      # eval.report utterances per training voice; 0 skips the listener report
    per_unseen_voice: int | None = None  # per held-out voice (null: per_voice)


@dataclass
class PipelineConfig:
    description: str = ""
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    latents: LatentSettings = field(default_factory=LatentSettings)
    unified: UnifiedSettings = field(default_factory=UnifiedSettings)
    refine: RefineSettings = field(default_factory=RefineSettings)
    report: ReportSettings = field(default_factory=ReportSettings)

    @property
    def final_model(self) -> str:
        """Where in a run folder the model the pipeline ends with lies: step 5's when the preset has one, else step 4's."""
        return "refine/final" if self.refine.enabled else "unified/final"

    def section(self, name: str) -> dict:
        """A step's settings as its fingerprint reads them. Settings added after runs were fingerprinted count only
        when they differ from their default (which is what those runs did), so those runs stay valid."""
        settings = asdict(getattr(self, name))
        for key, default in ADDED_LATER.get(name, {}).items():
            if settings.get(key) == default:
                settings.pop(key)
        return settings


ADDED_LATER = {"corpus": {"vocabulary": None, "second_vocabulary": None},
               "latents": {"asr_speed_range": None, "asr_speed_seed": 1, "asr_channel_bandwidths_khz": None,
                           "asr_channel_snr_db": None}}


def _build(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; expected {sorted(known)}")
    return data


def load_pipeline_config(preset_or_path: str) -> PipelineConfig:
    """A preset name (`smoke`, `tiny`, `default`: configs/demo/<name>.yaml) or a YAML path."""
    path = Path(preset_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{preset_or_path}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no demo preset {preset_or_path!r} ({path} missing); available: {available}")
    doc = _build(PipelineConfig, read_config(path), str(path))
    tokenizer = _build(TokenizerSettings, doc.get("tokenizer") or {}, f"{path}: tokenizer")
    stages = [TokenizerStage(**_build(TokenizerStage, s, f"{path}: tokenizer.stages[{i}]"))
              for i, s in enumerate(tokenizer.get("stages") or [])]
    if not stages:
        raise ValueError(f"{path}: tokenizer.stages lists no stage config")
    corpus = CorpusSettings(**_build(CorpusSettings, doc.get("corpus") or {}, f"{path}: corpus"))
    from data_prep.sentences import VOCABULARIES

    for key in ("vocabulary", "second_vocabulary"):
        if getattr(corpus, key) not in (None, *VOCABULARIES):
            raise ValueError(f"{path}: corpus.{key} {getattr(corpus, key)!r} is not one of {sorted(VOCABULARIES)}")
    if corpus.second_vocabulary is not None and corpus.second_vocabulary == (corpus.vocabulary or "base"):
        raise ValueError(f"{path}: corpus.second_vocabulary repeats the first corpus' vocabulary "
                         f"({corpus.second_vocabulary!r}): the second corpus would hold the same sentences")
    return PipelineConfig(
        description=doc.get("description", ""),
        corpus=corpus,
        tokenizer=TokenizerSettings(stages=stages, processes=int(tokenizer.get("processes", 1))),
        latents=LatentSettings(**_build(LatentSettings, doc.get("latents") or {}, f"{path}: latents")),
        unified=UnifiedSettings(**_build(UnifiedSettings, doc.get("unified") or {}, f"{path}: unified")),
        refine=RefineSettings(**_build(RefineSettings, doc.get("refine") or {}, f"{path}: refine")),
        report=ReportSettings(**_build(ReportSettings, doc.get("report") or {}, f"{path}: report")),
    )
