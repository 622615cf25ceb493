"""Streaming encoder/decoder/semantic module return exactly the offline output for any chunk partition."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings, strategies as st

from holitok import HoliTok, SemanticConfig, SemanticModule, get_preset_config

from conftest import GOLDEN

TOL = 1e-5
_model = HoliTok.from_pretrained(GOLDEN / "tiny_a", device="cpu")
_audio = torch.from_numpy(np.load(GOLDEN / "tiny_a" / "input_audio.npy"))[None, None]
_short_audio = _audio[..., : 12 * 1920 + 77]
with torch.no_grad():
    _short_posterior = _model.forward_posterior(_short_audio)
    _short_latents = _model.posterior_mean(_short_posterior)[..., :10]
    _short_wave = _model.forward_decode(_short_latents)


def _partition(total: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, total, *[c % total for c in cuts]})
    return list(zip(points[:-1], points[1:]))


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 10**9), max_size=12))
def test_stream_encoder_equals_offline(cuts):
    enc = _model.stream_encoder()
    parts = [enc.step(_short_audio[..., a:b]) for a, b in _partition(_short_audio.shape[-1], cuts)]
    assert (torch.cat(parts + [enc.flush()], dim=-1) - _short_posterior).abs().max() <= TOL


@settings(max_examples=5, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 10**9), max_size=6))
def test_stream_decoder_equals_offline(cuts):
    dec = _model.stream_decoder()
    parts = [dec.step(_short_latents[..., a:b]) for a, b in _partition(_short_latents.shape[-1], cuts)]
    assert (torch.cat(parts + [dec.flush()], dim=-1) - _short_wave).abs().max() <= TOL


def test_stream_holds_back_only_the_lookahead():
    enc = _model.stream_encoder()
    # Frame t needs samples up to (t + 2) * 1920 inclusive: after 5 * 1920 + 1 samples, frames 0..3 are out.
    assert enc.step(_audio[..., : 5 * 1920 + 1]).shape[-1] == 4
    dec = _model.stream_decoder()
    assert dec.step(_short_latents[..., :5]).shape[-1] == 3 * 1920


def test_chunked_decode_and_encode_equal_offline():
    assert (_model.decode(_short_latents, chunk_frames=3) - _short_wave).abs().max() <= TOL
    long_audio = _audio.repeat(1, 1, 2)
    with torch.no_grad():
        full = _model.forward_posterior(long_audio)
    assert (_model.encode_posterior(long_audio, chunk_frames=4) - full).abs().max() <= TOL


def test_padded_batch_keeps_each_item():
    lengths = torch.tensor([19200, 13001, 1920])
    batch = torch.zeros(3, 1, 19200)
    for i, n in enumerate(lengths.tolist()):
        batch[i, :, :n] = _audio[..., :n]
    post = _model.encode_posterior(batch, lengths=lengths, chunk_frames=None)
    streamed = _model.encode_posterior(batch, lengths=lengths, chunk_frames=3)
    frames = (lengths + 1919) // 1920
    z = _model.posterior_mean(post)
    wav = _model.decode(z, lengths=frames, chunk_frames=None)
    wav_streamed = _model.decode(z, lengths=frames, chunk_frames=4)
    for i, n in enumerate(lengths.tolist()):
        single = _model.encode_posterior(_audio[..., :n], chunk_frames=None)
        t = single.shape[-1]
        assert (post[i:i + 1, :, :t] - single).abs().max() <= TOL
        assert (streamed[i:i + 1, :, :t] - single).abs().max() <= TOL
        single_wav = _model.decode(_model.posterior_mean(single), chunk_frames=None)
        assert (wav[i:i + 1, :, : t * 1920] - single_wav).abs().max() <= TOL
        assert (wav_streamed[i:i + 1, :, : t * 1920] - single_wav).abs().max() <= TOL
        assert wav[i, :, t * 1920:].abs().sum() == 0


def test_semantic_kv_cache_equals_full_forward():
    torch.manual_seed(3)
    semantic = SemanticModule(SemanticConfig(input_dim=16, hidden_size=32, num_layers=2, num_heads=4,
                                             ffn_hidden_size=48)).eval()
    x = torch.randn(2, 23, 16)
    with torch.no_grad():
        full = semantic(x)
        cache = semantic.init_cache()
        parts = [semantic.step(x[:, a:b], cache) for a, b in [(0, 1), (1, 9), (9, 10), (10, 23)]]
    assert (torch.cat(parts, dim=1) - full).abs().max() <= TOL
    # causal: a change at frame 12 leaves frames < 12 untouched
    x2 = x.clone()
    x2[:, 12] += 1.0
    with torch.no_grad():
        changed = semantic(x2)
    assert torch.equal(changed[:, :12], full[:, :12]) and not torch.allclose(changed[:, 12:], full[:, 12:])


def test_semantic_padding_does_not_change_valid_frames():
    torch.manual_seed(4)
    semantic = SemanticModule(SemanticConfig(input_dim=16, hidden_size=32, num_layers=2, num_heads=4,
                                             ffn_hidden_size=48)).eval()
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        out = semantic(x, lengths=torch.tensor([10, 6]))
        alone = semantic(x[1:, :6])
    assert (out[1:, :6] - alone).abs().max() <= TOL
    assert torch.isfinite(out).all() and out[1, 6:].abs().max() == 0


def test_tiny_random_model_streams_too():
    torch.manual_seed(5)
    model = HoliTok(get_preset_config("tiny")).eval()
    audio = torch.randn(1, 1, 9000) * 0.1
    with torch.no_grad():
        post = model.forward_posterior(audio)
    enc = model.stream_encoder()
    got = torch.cat([enc.step(audio[..., :333]), enc.step(audio[..., 333:]), enc.flush()], dim=-1)
    assert (got - post).abs().max() <= TOL
