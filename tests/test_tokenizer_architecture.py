"""The full presets built on the meta device match the released checkpoints' state-dict manifests exactly."""
from __future__ import annotations

import json

import pytest
import torch

from holitok import HoliTok, SemanticConfig, SemanticModule, get_preset_config

from conftest import GOLDEN, REPO


@pytest.mark.parametrize("preset", ["HoliTok-Base", "HoliTok-Unite", "base", "holitok-unite"])
def test_full_preset_matches_manifest(preset):
    manifest = json.loads((GOLDEN / "holitok_full_state_dict_manifest.json").read_text())
    with torch.device("meta"):
        model = HoliTok(preset)
    state = model.state_dict()
    expected = {e["key"]: tuple(e["shape"]) for e in manifest["entries"]}
    assert len(state) == manifest["num_tensors"] == 1067
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    params = sum(p.numel() for p in model.parameters())
    assert params == manifest["param_count_as_stored_with_weight_norm"] == 180_898_397
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers == manifest["buffer_count_elements"]
    model.fold_weight_norm()
    assert sum(p.numel() for p in model.parameters()) == manifest["param_count_all_weight_norm_folded"]


def test_semantic_manifest_layout():
    manifest = json.loads((GOLDEN / "semantic_full_state_dict_manifest.json").read_text())
    assumed = manifest["ASSUMED_not_in_code"]
    config = SemanticConfig(input_dim=128, hidden_size=1536, num_layers=assumed["num_layers"],
                            ffn_hidden_size=assumed["ffn_hidden_size"], num_heads=16)
    with torch.device("meta"):
        module = SemanticModule(config)
    state = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    expected = {e["module_key"]: tuple(e["shape"]) for e in manifest["entries"]}
    assert state == expected
    assert sum(p.numel() for p in module.parameters()) == manifest["param_count_total_with_assumed_depth"]


def test_latency_and_lengths():
    model = HoliTok(get_preset_config("tiny"))
    assert model.latency_ms == {"encoder": 80.0, "decoder": 80.0, "end_to_end": 160.0, "frame": 40.0}
    for n in (1, 1920, 1921, 9000):
        audio = torch.randn(1, 1, n) * 0.1
        post = model.encode_posterior(audio)
        assert post.shape == (1, 32, -(-n // 1920))
        assert model.decode(model.posterior_mean(post)).shape[-1] == post.shape[-1] * 1920


def test_invalid_configs_are_refused():
    with pytest.raises(ValueError, match="must be 12"):
        get_preset_config("tiny").__class__(downsample_channels=[16, 24, 48, 96, 192, 384, 768])
    with pytest.raises(ValueError, match="unknown HoliTok config keys"):
        HoliTok({"latent_dimm": 64})
    with pytest.raises(KeyError, match="unknown HoliTok preset"):
        get_preset_config("HoliTok-Large")


def test_fresh_model_keeps_the_signal_alive():
    """Training from scratch needs an init under which the encoder neither loses nor blows up the input and the
    decoder output depends on the latents (default conv init lost 95% of it, and training then ignored the input)."""
    from holitok.audio import load_audio
    torch.manual_seed(0)
    model = HoliTok(get_preset_config("tiny"))
    audio = load_audio(REPO / "tokenizer/holitok/assets/hello.wav")[None, None]
    with torch.no_grad():
        features = model.audio_encoder(audio)
        ratio = features.std(dim=-1).mean() / audio.std()
        assert 0.2 < ratio < 5, f"encoder output / input time-variation ratio {ratio:.3f}"
        mu = model.posterior_mean(model.forward_posterior(audio))
        wave = model.forward_decode(mu)
        silent = model.forward_decode(torch.zeros_like(mu))
    assert (wave - silent).std() > 0.1 * wave.std()
    assert (wave.abs() >= 1).float().mean() < 0.01
