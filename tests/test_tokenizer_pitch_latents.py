"""Pitch latents (holitok/pitch_latents.py): measured F0 and voicing as latent channels, the istft head's comb at that
F0, streaming == offline both ways, save/load, and a warm start from a tokenizer without them."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from holitok import HoliTok, get_preset_config
from holitok.config import HoliTokConfig
from holitok.istft_head import ISTFTHead
from holitok.pitch_latents import (F0_SCALE, PITCH_LOG_STD, REFERENCE_LOG2_F0, from_channels, measure, to_channels,
                                   widen_voicing)

TOL = 1e-5
SR = 48000
CPU_OVERRIDES = dict(latent_dim=8, mi_num_layers=1, encoder_frontend="stft", frontend_hop=480, frontend_n_fft=960,
                     downsample_rates=[4], downsample_channels=[16, 24], upsample_rates=[4], upsample_kernel_sizes=[8],
                     upsample_initial_channel=32, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
                     decoder_head="istft", istft_n_fft=1920)


def _config(**changes) -> HoliTokConfig:
    return HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), **CPU_OVERRIDES, **changes})


def _voice(f0_start: float, f0_end: float, seconds: float, harmonics: int = 12) -> torch.Tensor:
    """A gliding harmonic tone (a crude voiced vowel) at 48 kHz, [L]."""
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f0 = f0_start * (f0_end / f0_start) ** (t / seconds)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / SR
    wave = sum(torch.sin(k * phase) / k for k in range(1, harmonics + 1))
    return (0.2 * wave).float()


# 0.5 s rising voice, 0.3 s silence, 0.4 s steady 200 Hz voice, a ragged end
_audio = torch.cat([_voice(120, 180, 0.5), torch.zeros(int(0.3 * SR)), _voice(200, 200, 0.4), torch.zeros(777)])
_audio = _audio[None, None]
torch.manual_seed(0)
_model = HoliTok(_config(pitch_latents=True)).eval()
with torch.no_grad():
    _posterior = _model.forward_posterior(_audio)
    _latents = _model.posterior_mean(_posterior)
    _wave = _model.forward_decode(_latents)


def _partition(total: int, cuts: list[int]) -> list[tuple[int, int]]:
    points = sorted({0, total, *[c % total for c in cuts]})
    return list(zip(points[:-1], points[1:]))


def test_layout_learnt_channels_then_f0_then_voicing():
    assert _model.pitch_channels == 8 and _model.latent_dim == 16  # 4 head frames per latent frame, x2
    assert _posterior.shape == (1, 32, math.ceil(_audio.shape[-1] / 1920))
    log_std = _posterior.chunk(2, dim=1)[1]
    assert (log_std[:, 8:] == PITCH_LOG_STD).all()
    sampled = _model.sample_posterior(_posterior, generator=torch.Generator().manual_seed(0))
    assert (sampled[:, 8:] - _latents[:, 8:]).abs().max() < 1e-9  # sampling leaves the measured pitch as it is
    assert not torch.equal(sampled[:, :8], _latents[:, :8])


def test_channels_carry_the_tracked_pitch_and_hold_it_through_silence():
    log2_f0, voiced = from_channels(_latents[:, 8:])
    frames_per_second = SR / 480
    rising = slice(int(0.1 * frames_per_second), int(0.4 * frames_per_second))
    steady = slice(int(0.85 * frames_per_second), int(1.1 * frames_per_second))
    silence = slice(int(0.56 * frames_per_second), int(0.74 * frames_per_second))
    assert voiced[0, rising].all() and voiced[0, steady].all() and not voiced[0, silence].any()
    cents = 1200 * (log2_f0[0, steady] - math.log2(200.0)).abs()
    assert cents.max() < 10
    # the rising stretch rises, within the glide's range
    f0 = 2 ** log2_f0[0, rising]
    assert f0[-1] > f0[0] * 1.2 and f0.min() > 115 and f0.max() < 185
    # unvoiced frames hold the last voiced F0 (a continuous contour, not a jump to a placeholder)
    held = log2_f0[0, silence]
    assert (held == held[0]).all() and abs(2 ** float(held[0]) - 180) < 10
    # channel units: F0_SCALE per octave around 150 Hz
    assert math.isclose(float(_latents[0, 8, 0]), (float(log2_f0[0, 0]) - REFERENCE_LOG2_F0) * F0_SCALE, abs_tol=1e-5)


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
    streamed = torch.cat(parts + [dec.flush()], dim=-1)
    assert streamed.shape == _wave.shape and (streamed - _wave).abs().max() <= TOL


def test_public_decode_chunks_equal_one_pass():
    assert (_model.decode(_latents, chunk_frames=7) - _model.decode(_latents, chunk_frames=None)).abs().max() <= TOL
    assert (_model.encode_posterior(_audio, chunk_frames=3) - _posterior).abs().max() <= TOL


def test_measure_is_frame_local():
    """Any window of frames measured from a cut of the audio equals the whole-signal values (what streaming needs)."""
    whole_f0, whole_v, _ = measure(_audio, SR, 480, 1920, 0, 120)
    origin = 37 * 480
    part_f0, part_v, _ = measure(_audio[..., origin:], SR, 480, 1920, 40, 50, held=whole_f0[:, 39], origin=origin)
    assert torch.equal(part_v, whole_v[:, 40:90]) and (part_f0 - whole_f0[:, 40:90]).abs().max() < 1e-9


def test_head_draws_the_comb_at_the_tracked_f0():
    """Voiced at 210 Hz everywhere: the output's long-window spectrum peaks at the harmonics of 210 Hz (without the
    track the same features give no such comb)."""
    latents = _latents.clone()
    latents[:, 8:12] = (math.log2(210.0) - REFERENCE_LOG2_F0) * F0_SCALE
    latents[:, 12:] = 1.0
    with torch.no_grad():
        wave = _model.forward_decode(latents)[0, 0, 4096:4096 + 16384]
    spectrum = torch.fft.rfft(wave * torch.hann_window(wave.shape[-1])).abs()
    hz = SR / wave.shape[-1]

    def energy(freqs):
        return sum(float(spectrum[round(f / hz) - 2: round(f / hz) + 3].square().sum()) for f in freqs)

    on = energy([210 * k for k in range(1, 20)])
    off = energy([210 * (k + 0.5) for k in range(1, 20)])
    assert on > 30 * off


def test_voicing_off_leaves_the_heads_own_output():
    """Unvoiced frames everywhere: the head renders exactly what a model without pitch channels renders."""
    plain = HoliTok(_config()).eval()
    plain.load_state_dict(_model.state_dict())
    latents = _latents.clone()
    latents[:, 12:] = -1.0
    with torch.no_grad():
        assert torch.equal(_model.forward_decode(latents), plain.forward_decode(latents[:, :8]))


def test_save_load_round_trip_and_warm_start_from_a_tokenizer_without_pitch(tmp_path):
    _model.save_pretrained(tmp_path / "pitch")
    loaded = HoliTok.from_pretrained(tmp_path / "pitch", fold_weight_norm=False, device="cpu")
    assert loaded.config.pitch_latents and loaded.latent_dim == 16
    with torch.no_grad():
        assert (loaded.forward_posterior(_audio) - _posterior).abs().max() <= TOL
    plain = HoliTok(_config()).eval()
    assert "pitch_latents" not in plain.config.to_dict() and plain.latent_dim == 8
    # same tensors: a tokenizer without pitch channels loads as is, and its learnt channels are unchanged
    widened = HoliTok(_config(pitch_latents=True)).eval()
    widened.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.equal(widened.forward_posterior(_audio)[:, :8], plain.forward_posterior(_audio)[:, :8])


def test_refusals():
    with pytest.raises(ValueError, match="pitch_latents needs decoder_head 'istft'"):
        HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), "pitch_latents": True})
    head = ISTFTHead(8, 1920, 480)
    with pytest.raises(ValueError, match="sample_rate"):
        head(torch.zeros(1, 8, 3), (torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="decode expects latents"):
        _model.decode(_latents[:, :8])


def test_a_decoder_only_stage_trains_through_the_comb_and_keeps_the_kl_off_the_pitch(tmp_path):
    from pathlib import Path

    from holitok.train.config import load_config
    from holitok.train.flow import flow_kl
    from holitok.train.toy_assets import write_clips
    from holitok.train.train_model import TokenizerTrainModel

    manifest = write_clips(tmp_path / "clips", count=2, seconds=0.8)
    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tokenizer" / "demo_decoder_warm.yaml",
                         [f"data.train={manifest}", f"output_dir={tmp_path / 'run'}", "init_from=null",
                          "model.overrides.pitch_latents=true"])
    torch.manual_seed(0)
    model = TokenizerTrainModel(config)
    learnt = model.holitok.config.latent_dim
    assert model.learnt_dim == learnt and model.holitok.latent_dim == learnt + 8
    audio = _audio[..., : 48000]
    output = model(audio, torch.tensor([audio.shape[-1]]))
    assert torch.isfinite(output.losses["kl"])
    output.audio.square().mean().backward()
    grads = [p.grad for name, p in model.holitok.named_parameters() if name.startswith("decoder.head.")]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)
    # the KL reads the learnt channels only (the pitch channels' log sigma of -30 would add ~30 nats per channel)
    torch.manual_seed(5)
    kl = model(audio, torch.tensor([audio.shape[-1]])).losses["kl"]
    torch.manual_seed(5)
    mu, log_std = model.holitok.forward_posterior(audio).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * log_std.exp()
    mask = torch.ones(1, 1, mu.shape[-1])
    assert torch.allclose(kl, flow_kl(z[:, :learnt], log_std[:, :learnt], mask, model.flow), atol=1e-5)
    assert float(flow_kl(z, log_std, mask, None)) > float(flow_kl(z[:, :learnt], log_std[:, :learnt], mask, None)) + 1


def test_widen_voicing_takes_the_nearest_voiced_frames_f0():
    voiced = torch.tensor([[False, False, True, False, False, False, True, True, False]])
    log2_f0 = torch.arange(9, dtype=torch.float64)[None] + 7.0
    f0, wide = widen_voicing(log2_f0, voiced, 1)
    assert wide.tolist() == [[False, True, True, True, False, True, True, True, True]]
    assert (f0 - 7.0).tolist() == [[0, 2, 2, 2, 4, 6, 6, 7, 7]]  # unvoiced frames keep their own value
    f0, wide = widen_voicing(log2_f0, voiced, 2)
    assert wide.all() and (f0 - 7.0).tolist() == [[2, 2, 2, 2, 2, 6, 6, 7, 7]]  # a tie takes the earlier one
    assert torch.equal(widen_voicing(log2_f0, voiced, 0)[1], voiced)


_wide = HoliTok(_config(pitch_latents=True, pitch_voicing_dilation=2)).eval()
_wide.load_state_dict(_model.state_dict())


def test_voicing_dilation_draws_the_widened_track():
    """The dilated decoder renders what the plain one renders from latents whose voicing channels were widened."""
    log2_f0, voiced = from_channels(_latents[:, 8:])
    widened = _latents.clone()
    widened[:, 8:] = to_channels(*widen_voicing(log2_f0, voiced, 2), 4)
    assert int(from_channels(widened[:, 8:])[1].sum()) > int(voiced.sum())  # the test audio has voicing edges
    with torch.no_grad():
        wave = _wide.forward_decode(_latents)
        assert (wave - _model.forward_decode(widened)).abs().max() <= TOL
        assert (wave - _wave).abs().max() > 1e-3
    with pytest.raises(ValueError, match="needs pitch_latents"):
        _config(pitch_voicing_dilation=1)
    with pytest.raises(ValueError, match="lookahead"):
        _config(pitch_latents=True, pitch_voicing_dilation=100)


def test_stream_decoder_with_voicing_dilation_equals_offline():
    """Voicing edges at every head frame of a latent frame, cut at every latent frame and frame by frame."""
    latents = _latents.clone()
    head = torch.arange(latents.shape[-1] * 4)
    latents[:, 12:] = torch.where((head // 5) % 2 == 0, 1.0, -1.0).view(-1, 4).T
    with torch.no_grad():
        offline = _wide.forward_decode(latents)
    frames = latents.shape[-1]
    for cuts in [[c] for c in range(1, frames)] + [list(range(1, frames))]:
        dec = _wide.stream_decoder()
        parts = [dec.step(latents[..., a:b]) for a, b in _partition(frames, cuts)]
        streamed = torch.cat(parts + [dec.flush()], dim=-1)
        assert streamed.shape == offline.shape and (streamed - offline).abs().max() <= TOL, cuts
