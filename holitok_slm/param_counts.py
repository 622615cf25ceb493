"""Module-by-module parameter counts of the unified model, compared with the paper's Table 4."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

from .config import load_unified_config
from .model.unified import UnifiedModel

MILLION = 1_000_000
# Paper Table 4 (millions). Base total 942M; Unite 842M downstream + 680M semantic encoder.
TABLE4 = {
    "base": {"audio_to_llm": 102, "llm": 494, "dit": 345, "bridge_eos": 2, "total": 942},
    "unite": {"audio_to_llm": 1, "llm": 494, "dit": 345, "bridge_eos": 2, "total": 842, "semantic_encoder": 680},
}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "unified"


def _count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def count_unified_params(model: UnifiedModel) -> dict[str, int]:
    """Counts per Table 4 row; the Unite semantic encoder is reported separately, as in the paper."""
    if model.semantic_input is not None:
        encoder = _count(model.semantic_input.encoder)
        audio = _count(model.semantic_input) - encoder
    else:
        encoder, audio = 0, _count(model.patch_encoder)
    counts = {"audio_to_llm": audio, "llm": _count(model.backbone), "dit": _count(model.dit),
              "bridge_eos": _count(model.bridge) + _count(model.stop_head)}
    counts["total"] = sum(counts.values())
    if model.semantic_input is not None:
        counts["semantic_encoder"] = encoder
    return counts


def build_on_meta(config_path: str | Path) -> UnifiedModel:
    """Paper-size model without allocating weights (no tokenizer needed: the vocab size comes from the config)."""
    with torch.device("meta"):
        return UnifiedModel(load_unified_config(config_path), text_tokenizer=None)


def tolerance(reference_millions: float, relative: float = 0.03) -> float:
    """Allowed |count - reference| in parameters: 3%, but never below the table's own rounding (0.5M)."""
    return max(relative * reference_millions, 0.5) * MILLION


@lru_cache(maxsize=None)
def paper_counts(variant: str) -> dict[str, int]:
    """Counts of configs/unified/model_{variant}.yaml (`base` or `unite`), built once on the meta device."""
    return count_unified_params(build_on_meta(CONFIG_DIR / f"model_{variant}.yaml"))


def compare_with_table4(variant: str) -> list[tuple[str, int, float, bool]]:
    """Rows of (module, our count, Table 4 millions, within tolerance) for `base` or `unite`."""
    counts = paper_counts(variant)
    return [(name, counts[name], ref, abs(counts[name] - ref * MILLION) <= tolerance(ref))
            for name, ref in TABLE4[variant].items()]
