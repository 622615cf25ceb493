"""Checkpoint formats: safetensors round trip, authors' model.pt/semantic.pt export and strict, safe loading."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from holitok import HoliTok, SemanticConfig, SemanticModule, get_preset_config
from holitok.checkpoint import CheckpointError, export_runtime_checkpoint, export_semantic_checkpoint

from conftest import GOLDEN


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    return HoliTok(get_preset_config("tiny")).eval()


def _posterior(model, n=6000):
    torch.manual_seed(2)
    audio = torch.randn(1, 1, n) * 0.1
    return model.encode_posterior(audio)


def test_safetensors_round_trip(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "model.safetensors").is_file() and (tmp_path / "ours" / "config.json").is_file()
    loaded = HoliTok.from_pretrained(tmp_path / "ours", device="cpu")
    assert loaded.config == tiny.config
    assert (_posterior(loaded) - _posterior(tiny)).abs().max() <= 1e-5


def test_runtime_export_round_trip(tiny, tmp_path):
    path = tmp_path / "model.pt"
    export_runtime_checkpoint(tiny, path, model_name="tiny")
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "holitok-runtime-state-dict-v1" and len(payload["model"]) == 1067
    assert any(k.endswith("weight_g") for k in payload["model"])
    loaded = HoliTok.from_pretrained(get_preset_config("tiny").to_dict(), path, device="cpu")
    assert (_posterior(loaded) - _posterior(tiny)).abs().max() <= 1e-5
    # a folded model exports the same g/v layout
    folded = HoliTok.from_pretrained(get_preset_config("tiny").to_dict(), path, device="cpu")
    export_runtime_checkpoint(folded, tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)["model"]
    assert set(again) == set(payload["model"])


def test_folded_checkpoint_is_accepted(tmp_path):
    model = HoliTok.from_pretrained(GOLDEN / "tiny_a", device="cpu")  # folded: plain `weight` tensors
    torch.save({"model": model.state_dict()}, tmp_path / "folded.pt")
    again = HoliTok.from_pretrained(GOLDEN / "tiny_a" / "config.json", tmp_path / "folded.pt", device="cpu")
    assert (_posterior(again) - _posterior(model)).abs().max() <= 1e-5


def test_mismatched_checkpoint_names_keys_and_shapes(tmp_path):
    sd = torch.load(GOLDEN / "tiny_a" / "model.pt", weights_only=True)["model"]
    sd.pop("pre_proj.bias")
    sd["decoder.conv_post.weight_v"] = torch.zeros(1, 3, 7)
    sd["surprise.weight"] = torch.zeros(1)
    sd["flow.layers.0.weight"] = torch.zeros(2)  # training-only: ignored by name
    torch.save({"model": sd}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as info:
        HoliTok.from_pretrained(GOLDEN / "tiny_a" / "config.json", tmp_path / "bad.pt")
    text = str(info.value)
    assert "pre_proj.bias" in text and "surprise.weight" in text and "(1, 3, 7)" in text
    assert "flow.layers" not in text
    with pytest.raises(CheckpointError, match="shape mismatches"):
        HoliTok.from_pretrained("HoliTok-Base", GOLDEN / "tiny_a" / "model.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_and_corrupt_files_are_refused(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(CheckpointError, match="refusing to unpickle|not a readable"):
        HoliTok.from_pretrained(GOLDEN / "tiny_a" / "config.json", tmp_path / "evil.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError):
        HoliTok.from_pretrained(GOLDEN / "tiny_a" / "config.json", tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="local cache"):
        HoliTok.from_pretrained("HoliTok-Base", local_files_only=True, cache_dir=tmp_path)


def test_semantic_formats_round_trip(tmp_path):
    torch.manual_seed(5)
    module = SemanticModule(SemanticConfig(input_dim=16, hidden_size=32, num_layers=3, num_heads=4,
                                           ffn_hidden_size=40)).eval()
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        expected = module(x)
    export_semantic_checkpoint(module, tmp_path / "semantic.pt")
    module.save_pretrained(tmp_path / "sem")
    for source in (tmp_path / "semantic.pt", tmp_path / "sem"):
        loaded = SemanticModule.from_pretrained(source, num_heads=4)
        assert loaded.config.num_layers == 3 and loaded.config.ffn_hidden_size == 40
        with torch.no_grad():
            assert (loaded(x) - expected).abs().max() <= 1e-6
    golden = SemanticModule.from_pretrained(GOLDEN / "tiny_a" / "semantic.pt")
    assert golden.config.hidden_size == 64 and golden.config.num_layers == 2 and golden.config.num_heads == 16
    assert golden.config.ffn_hidden_size == 160 and golden.config.input_dim == 16


def test_preset_resolves_from_local_cache(tmp_path):
    from holitok.checkpoint import resolve_preset_file
    target = tmp_path / "HoliTok-Unite" / "semantic.pt"
    target.parent.mkdir()
    target.write_bytes(b"x")
    assert resolve_preset_file("HoliTok-Unite", "semantic.pt", cache_dir=tmp_path, local_files_only=True) == target


def test_unified_tokenizer_compat_wrapper():
    from holitok import UnifiedTokenizer, sanitize_model_config
    tok = UnifiedTokenizer(GOLDEN / "tiny_a", semantic_checkpoint=GOLDEN / "tiny_a" / "semantic.pt", device="cpu")
    audio = torch.from_numpy(np.load(GOLDEN / "tiny_a" / "input_audio.npy"))
    z = tok.extract_latents(audio)
    np.testing.assert_allclose(z.numpy(), np.load(GOLDEN / "tiny_a" / "mu.npy"), atol=1e-4)
    feats = tok.extract_semantic_features_from_latents(z.transpose(1, 2))
    assert feats.shape == (1, 30, 64)
    assert tok.inference_from_latents(z).shape == (1, 1, 57600)
    assert sanitize_model_config({"latent_dim": 16, "distill_wavlm": True})["distill_wavlm"] is False
