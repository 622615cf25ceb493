"""eval.flow_head_fit: the isolated flow-head probe learns toy patches, and its learning rate scale matters."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from data_prep.toy_store import write_toy_store
from eval import flow_head_fit

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "unified" / "train_tiny.yaml"


def run(store, out, scale):
    return flow_head_fit.main(["--latents", str(store), "--config", str(CONFIG), "--items", "4", "--steps", "120",
                               "--batch", "64", "--eval_every", "60", "--set", "train.learning_rate=3e-3",
                               "--set", "train.warmup_steps=5", "--set", f"train.flow_head_lr_scale={scale}",
                               "--out", str(out)])


def test_flow_head_fit_learns_toy_patches_and_reports_a_curve(tmp_path):
    write_toy_store(tmp_path / "store", num_items=4, frames=(20, 28))
    fast = run(tmp_path / "store", tmp_path / "fast.json", 1.0)
    slow = run(tmp_path / "store", tmp_path / "slow.json", 0.01)
    written = json.loads((tmp_path / "fast.json").read_text())
    assert written["curve"] == fast["curve"] and written["flow_head_lr_scale"] == 1.0
    assert [point["step"] for point in fast["curve"]] == [0, 60, 120]
    start, end = fast["curve"][0], fast["curve"][-1]
    # An untrained head (zero output layer) leaves the start in place: the zero patch, i.e. the mean distance.
    assert start["deterministic"] == pytest.approx(fast["mean_patch_distance"], rel=1e-5)
    assert end["deterministic"] < 0.5 * start["deterministic"]
    assert end["deterministic"] < 0.7 * slow["curve"][-1]["deterministic"]  # a 100x smaller head lr fits worse
    assert 4 * 5 <= fast["patches"] <= 4 * 7


def test_flow_head_fit_refuses_a_store_without_whole_patches(tmp_path):
    write_toy_store(tmp_path / "store", num_items=2, frames=(2, 3))
    with pytest.raises(ValueError, match="no utterance"):
        run(tmp_path / "store", tmp_path / "x.json", 1.0)
