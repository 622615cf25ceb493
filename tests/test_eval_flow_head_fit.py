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


def test_flow_head_fit_with_a_trained_models_conditions_and_held_out_utterances(tmp_path):
    import torch

    from holitok_slm.tiny import build_tiny_model, randomize_heads
    from holitok_slm.train.latent_store import LatentStore

    write_toy_store(tmp_path / "store", num_items=6, frames=(20, 28))
    store = LatentStore(tmp_path / "store")
    model = randomize_heads(build_tiny_model([store.load(i)["text"] for i in range(6)], tmp_path))
    model.save_pretrained(tmp_path / "model")
    common = ["--latents", str(tmp_path / "store"), "--config", str(CONFIG), "--items", "6", "--steps", "60",
              "--batch", "32", "--eval_every", "60", "--conditions_from", str(tmp_path / "model"), "--holdout", "2"]
    own = flow_head_fit.main(common + ["--out", str(tmp_path / "own.json")])
    fresh = flow_head_fit.main(common + ["--fresh_head", "--out", str(tmp_path / "fresh.json")])
    first = own["curve"][0]
    assert set(first) >= {"deterministic", "sampled", "held_out_deterministic", "held_out_sampled"}
    assert own["patches"] == sum(store.load(i)["latents"].shape[0] // 4 for i in range(6))
    # A fresh head (zero output layer) starts at the zero patch; the model's own randomised DiT does not.
    assert fresh["curve"][0]["deterministic"] == pytest.approx(fresh["mean_patch_distance"], rel=1e-5)
    assert own["curve"][0]["deterministic"] != pytest.approx(fresh["curve"][0]["deterministic"], rel=1e-3)
    # The model's own conditions, recomputed by hand for the first utterance's second patch.
    targets, history, conditions, owner, loaded = flow_head_fit.model_patches(tmp_path / "model", store, 6)
    batch = loaded.collate([{**store.load(0), "task": "tts"}])
    with torch.no_grad():
        hidden = loaded.hidden_states(batch["input_ids"], batch["attention_mask"], batch["latents"],
                                      batch["frame_mask"], batch["audio_offset"], batch["num_patches"])
        offset = int(batch["audio_offset"][0])
        assert torch.allclose(conditions[1], loaded.bridge(hidden[0, offset]), atol=1e-5)
    assert torch.equal(history[1], targets[0]) and owner[0] == 0 and int(owner.max()) == 5
    with pytest.raises(ValueError, match="holdout"):
        flow_head_fit.main(["--latents", str(tmp_path / "store"), "--config", str(CONFIG), "--holdout", "1",
                            "--steps", "1", "--out", str(tmp_path / "x.json")])
