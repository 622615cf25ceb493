"""The authors' conformance vectors: our HoliTok must reproduce every array of every golden set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from holitok import HoliTok, SemanticModule
from holitok.audio import load_audio

from conftest import golden_sets

ATOL = RTOL = 1e-4


def _close(actual: torch.Tensor, golden_dir, name: str) -> None:
    expected = np.load(golden_dir / f"{name}.npy")
    got = actual.detach().cpu().numpy()
    assert got.shape == expected.shape, f"{name}: shape {got.shape} != {expected.shape}"
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL, err_msg=name)


@pytest.mark.parametrize("golden", golden_sets(), ids=lambda p: p.name)
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "weight-norm"])
def test_model_reproduces_golden(golden, fold):
    model = HoliTok.from_pretrained(golden, device="cpu", fold_weight_norm=fold)
    audio = torch.from_numpy(np.load(golden / "input_audio.npy"))
    post = model.encode_posterior(audio)
    _close(post, golden, "posterior")
    mu, log_std = post.chunk(2, dim=1)
    _close(mu, golden, "mu")
    _close(log_std, golden, "log_std")
    with torch.no_grad():
        _close(model.audio_encoder(audio[None, None]), golden, "enc_conv_out")
        h = model.dec_mi_layer(model.post_proj(mu).transpose(1, 2)).transpose(1, 2)
        _close(h, golden, "decoder_input")
    mu_ref = torch.from_numpy(np.load(golden / "mu.npy"))
    _close(model.decode(mu_ref), golden, "decoded_from_mu")
    eps = torch.from_numpy(np.load(golden / "eps.npy"))
    log_std_ref = torch.from_numpy(np.load(golden / "log_std.npy"))
    _close(model.decode(mu_ref + eps * log_std_ref.exp()), golden, "decoded_from_sample")


@pytest.mark.parametrize("golden", golden_sets(), ids=lambda p: p.name)
def test_config_and_wav_input_match_golden(golden):
    config = json.loads((golden / "config.json").read_text())
    model = HoliTok.from_pretrained(golden / "config.json", golden / "model.pt", device="cpu")
    assert model.latent_dim == config["latent_dim"] and model.hop_size == 1920
    wav = load_audio(golden / "input_audio.wav")
    np.testing.assert_array_equal(wav.numpy(), np.load(golden / "input_audio.npy"))
    _close(model.encode_posterior(wav), golden, "posterior")


@pytest.mark.parametrize("golden", golden_sets(), ids=lambda p: p.name)
def test_semantic_module_reproduces_golden(golden):
    semantic = SemanticModule.from_pretrained(golden / "semantic.pt")
    x = torch.from_numpy(np.load(golden / "semantic_input.npy"))
    with torch.no_grad():
        _close(semantic(x), golden, "semantic_features")
        _close(semantic(x.transpose(1, 2), channel_last=False), golden, "semantic_features")
