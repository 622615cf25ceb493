"""The small-CPU-preset parts of HoliTok (STFT front end, inverse-STFT head): streaming == offline, causal, exact
round trips through save_pretrained, refused by the authors' export, and invisible in the authors' config layout."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from holitok import HoliTok, get_preset_config
from holitok.checkpoint import export_runtime_checkpoint
from holitok.config import HoliTokConfig
from holitok.istft_head import LOG_MAGNITUDE_OFFSET, LOG_MAGNITUDE_SCALE, ISTFTHead

TOL = 1e-5
CPU_OVERRIDES = dict(latent_dim=8, mi_num_layers=1, encoder_frontend="stft", frontend_hop=480, frontend_n_fft=960,
                     downsample_rates=[4], downsample_channels=[16, 24], upsample_rates=[4], upsample_kernel_sizes=[8],
                     upsample_initial_channel=32, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                     decoder_head="istft", istft_n_fft=1920)


def _config(**changes) -> HoliTokConfig:
    return HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), **CPU_OVERRIDES, **changes})


torch.manual_seed(0)
_model = HoliTok(_config()).eval()
_audio = torch.randn(1, 1, 11 * 1920 + 301, generator=torch.Generator().manual_seed(1)) * 0.1
with torch.no_grad():
    _posterior = _model.forward_posterior(_audio)
    _latents = _model.posterior_mean(_posterior)
    _wave = _model.forward_decode(_latents)


def _partition(total: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, total, *[c % total for c in cuts]})
    return list(zip(points[:-1], points[1:]))


def test_hop_and_shapes_follow_the_frontend_and_head():
    assert _model.hop_size == 1920 and _model.config.istft_hop == 480
    assert _posterior.shape == (1, 16, math.ceil(_audio.shape[-1] / 1920))
    assert _wave.shape == (1, 1, _latents.shape[-1] * 1920)
    assert not hasattr(_model.decoder, "conv_post")


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 10**9), max_size=8))
def test_stream_encoder_equals_offline(cuts):
    enc = _model.stream_encoder()
    parts = [enc.step(_audio[..., a:b]) for a, b in _partition(_audio.shape[-1], cuts)]
    assert (torch.cat(parts + [enc.flush()], dim=-1) - _posterior).abs().max() <= TOL


@settings(max_examples=6, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, 10**9), max_size=6))
def test_stream_decoder_equals_offline(cuts):
    dec = _model.stream_decoder()
    parts = [dec.step(_latents[..., a:b]) for a, b in _partition(_latents.shape[-1], cuts)]
    assert (torch.cat(parts + [dec.flush()], dim=-1) - _wave).abs().max() <= TOL


def test_causal_with_only_the_configured_lookahead():
    audio = _audio.clone()
    audio[..., 6 * 1920 + 7] += 0.5
    with torch.no_grad():
        changed = (_model.forward_posterior(audio) - _posterior).abs().sum(1)[0] > 0
    assert int(torch.nonzero(changed)[0]) == 5  # frame t sees samples up to (t + 2) * 1920: t = 5 is the first
    latents = _latents.clone()
    latents[..., 8] += 1.0
    with torch.no_grad():
        changed = (_model.forward_decode(latents) - _wave).abs()[0, 0] > 0
    # decoder lookahead 2 frames: the audio of frame 6 is the first that changes
    assert 6 * 1920 <= int(torch.nonzero(changed)[0]) < 7 * 1920


def test_istft_head_has_unit_gain_for_a_steady_spectrum():
    head = ISTFTHead(channels=4, n_fft=64, hop=16)
    with torch.no_grad():
        head.proj.weight_g.zero_()
        head.proj.bias.zero_()
        raw = lambda log_magnitude: (log_magnitude - LOG_MAGNITUDE_OFFSET) / LOG_MAGNITUDE_SCALE
        head.proj.bias[: head.bins] = raw(-30.0)      # every bin silent ...
        head.proj.bias[0] = raw(math.log(64.0))       # ... but DC at magnitude n_fft: irfft gives 1 at every sample
        y = head(torch.zeros(1, 4, 10))[0, 0]
    steady = y[3 * 16:]  # once `overlap` windows overlap, they sum to one
    assert torch.allclose(steady, torch.ones_like(steady), atol=1e-5)


def test_round_trip_and_authors_layout(tmp_path):
    _model.save_pretrained(tmp_path / "m")
    loaded = HoliTok.from_pretrained(tmp_path / "m", device="cpu").eval()
    with torch.no_grad():
        assert torch.equal(loaded.forward_decode(_latents), _wave)
    with pytest.raises(ValueError, match="authors' runtime has no 'istft'"):
        export_runtime_checkpoint(_model, tmp_path / "model.pt")
    # a released model's config never mentions our keys, so the authors' files and ours stay identical
    ours = {"decoder_head", "istft_n_fft", "encoder_frontend", "frontend_hop", "frontend_long_n_fft",
            "frontend_long_max_hz", "harmonic_mix", "istft_hidden"}
    assert not ours & set(get_preset_config("HoliTok-Base").to_dict())
    # and a cpu-small model saves only the keys it uses: the shipped tokenizer's config.json is unchanged by them
    assert not {"frontend_long_n_fft", "frontend_long_max_hz", "harmonic_mix"} & set(_model.config.to_dict())


@pytest.mark.parametrize("changes, message", [
    (dict(istft_n_fft=500), "istft_n_fft must be a multiple"),
    (dict(upsample_rates=[7], upsample_kernel_sizes=[14]), "must divide the hop size"),
    (dict(decoder_head="vocoder"), "decoder_head 'vocoder' is unknown"),
    (dict(encoder_frontend="mel"), "encoder_frontend 'mel' is unknown"),
    (dict(frontend_n_fft=100), "frontend_n_fft >= frontend_hop"),
])
def test_bad_cpu_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_waveform_frontend_refuses_a_frontend_hop():
    with pytest.raises(ValueError, match="frontend_hop only applies"):
        HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), "frontend_hop": 4})


def test_the_long_window_streams_exactly_and_starts_as_the_model_without_it(tmp_path):
    torch.manual_seed(0)
    long = HoliTok(_config(frontend_long_n_fft=3840)).eval()
    long.reset_parameters()
    stem = long.audio_encoder.generator[0]
    assert stem.long_dft.bins == 161  # 2 kHz at 12.5 Hz bins
    assert float(stem.long_proj.weight.detach().abs().sum()) == 0.0
    plain_state = {k: v for k, v in long.state_dict().items() if ".long_proj." not in k}
    plain = HoliTok(_config()).eval()
    plain.load_state_dict(plain_state, strict=True)
    with torch.no_grad():
        assert torch.equal(long.forward_posterior(_audio), plain.forward_posterior(_audio))
        stem.long_proj.weight.normal_(0.0, 0.1)  # now it matters, and still streams exactly
        posterior = long.forward_posterior(_audio)
        assert not torch.equal(posterior, plain.forward_posterior(_audio))
    for cuts in ([1000, 1001, 7000], [3 * 1920 + 5]):
        enc = long.stream_encoder()
        parts = [enc.step(_audio[..., a:b]) for a, b in _partition(_audio.shape[-1], cuts)]
        assert (torch.cat(parts + [enc.flush()], dim=-1) - posterior).abs().max() <= TOL
    # the g/v layout of a projection that is still zero stays exact (g = 0), not 0 / 0
    unfolded = HoliTok(_config(frontend_long_n_fft=3840)).eval()
    unfolded.reset_parameters()
    with torch.no_grad():
        before = unfolded.forward_posterior(_audio)
        assert torch.equal(unfolded.unfold_weight_norm().forward_posterior(_audio), before)
    with pytest.raises(ValueError, match="must exceed frontend_n_fft"):
        HoliTok(_config(frontend_long_n_fft=960))
    with pytest.raises(ValueError, match="frontend_long_n_fft only applies to encoder_frontend 'stft'"):
        HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), "frontend_long_n_fft": 3840})


def test_the_head_branch_starts_at_zero_streams_exactly_and_round_trips(tmp_path):
    torch.manual_seed(0)
    wide = HoliTok(_config(istft_hidden=16)).eval()
    wide.reset_parameters()
    branch = wide.decoder.head.branch
    assert float(branch.outer.weight.detach().abs().sum()) == 0.0  # reset_parameters keeps the output layer at zero
    plain_state = {k: v for k, v in wide.state_dict().items() if ".head.branch." not in k}
    plain = HoliTok(_config()).eval()
    plain.load_state_dict(plain_state, strict=True)
    with torch.no_grad():
        assert torch.equal(wide.forward_decode(_latents), plain.forward_decode(_latents))
        branch.outer.weight.normal_(0.0, 0.1)  # now it matters, and still streams exactly
        wave = wide.forward_decode(_latents)
        assert not torch.equal(wave, plain.forward_decode(_latents))
    for cuts in ([1, 2, 7], [5]):
        dec = wide.stream_decoder()
        parts = [dec.step(_latents[..., a:b]) for a, b in _partition(_latents.shape[-1], cuts)]
        assert (torch.cat(parts + [dec.flush()], dim=-1) - wave).abs().max() <= TOL
    wide.save_pretrained(tmp_path / "wide")
    loaded = HoliTok.from_pretrained(tmp_path / "wide", device="cpu").eval()
    assert loaded.config.istft_hidden == 16
    with torch.no_grad():
        assert torch.equal(loaded.forward_decode(_latents), wave)
    assert "istft_hidden" not in _model.config.to_dict()  # a tokenizer without the branch saves the same config
    with pytest.raises(ValueError, match="istft_hidden must be >= 0 and needs decoder_head"):
        HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), "istft_hidden": 16})


def _steady_bin_head(phase: str) -> ISTFTHead:
    """A head whose every frame is one bin (k = 1 of n_fft 64, hop 16) at magnitude n_fft / 2 and raw phase 0."""
    head = ISTFTHead(channels=4, n_fft=64, hop=16, phase=phase)
    with torch.no_grad():
        head.proj.weight_g.zero_()
        head.proj.bias.zero_()
        raw = lambda log_magnitude: (log_magnitude - LOG_MAGNITUDE_OFFSET) / LOG_MAGNITUDE_SCALE
        head.proj.bias[: head.bins] = raw(-30.0)
        head.proj.bias[1] = raw(math.log(32.0))
    return head


def test_summed_advances_continue_a_sinusoid_that_absolute_phases_cancel():
    n = torch.arange(16 * 40, dtype=torch.float64)
    with torch.no_grad():
        advancing = _steady_bin_head("advance")(torch.zeros(1, 4, 40))[0, 0].double()
        absolute = _steady_bin_head("absolute")(torch.zeros(1, 4, 40))[0, 0].double()
    # every frame starts where the last one's sinusoid had got to: a steady cosine at the bin's centre frequency
    expected = torch.cos(2 * math.pi * (n + 16) / 64)
    assert torch.allclose(advancing[64:], expected[64:], atol=1e-5)
    # the same phase every frame: the sinusoid restarts every hop, so the output repeats every hop (energy only at
    # multiples of the frame rate) and none of it is left at the bin's own frequency
    steady = absolute[64:]
    assert torch.allclose(steady[16:], steady[:-16], atol=1e-6) and steady.abs().max() > 0.1
    at_bin = (steady * torch.exp(-2j * math.pi * n[64:] / 64)).mean().abs()
    assert at_bin < 1e-6 and (advancing[64:] * torch.exp(-2j * math.pi * n[64:] / 64)).mean().abs() > 0.49


def test_the_advance_head_streams_exactly_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = HoliTok(_config(istft_phase="advance")).eval()
    model.reset_parameters()
    with torch.no_grad():
        wave = model.forward_decode(_latents)
    assert torch.isfinite(wave).all() and wave.abs().max() > 0
    for cuts in ([1, 2, 7], [5], [3, 4, 9, 10]):
        dec = model.stream_decoder()
        parts = [dec.step(_latents[..., a:b]) for a, b in _partition(_latents.shape[-1], cuts)]
        assert (torch.cat(parts + [dec.flush()], dim=-1) - wave).abs().max() <= TOL
    model.save_pretrained(tmp_path / "advance")
    loaded = HoliTok.from_pretrained(tmp_path / "advance", device="cpu").eval()
    assert loaded.config.istft_phase == "advance" and "istft_phase" not in _model.config.to_dict()
    with torch.no_grad():
        assert torch.equal(loaded.forward_decode(_latents), wave)
    with pytest.raises(ValueError, match="istft_phase 'clock' is unknown"):
        _config(istft_phase="clock")
    with pytest.raises(ValueError, match="istft_phase only applies"):
        HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), "istft_phase": "advance"})


def test_a_folded_checkpoint_with_a_zero_row_loads_finite(tmp_path):
    folded = HoliTok(_config()).eval().fold_weight_norm()
    with torch.no_grad():
        folded.decoder.head.proj.weight[folded.decoder.head.bins:] = 0  # e.g. phase rows reset at zero
    folded.save_pretrained(tmp_path / "folded")
    loaded = HoliTok.from_pretrained(tmp_path / "folded", device="cpu")
    assert torch.isfinite(loaded.decoder.head.proj.weight).all()
    assert torch.equal(loaded.decoder.head.proj.weight, folded.decoder.head.proj.weight)
