"""The harmonic decoder head (holitok/harmonic_head.py): its pulse train, streaming == offline, the istft-to-harmonic
upgrade of a checkpoint, and the pitch term that trains its F0."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from holitok import HoliTok, get_preset_config
from holitok.checkpoint import export_runtime_checkpoint
from holitok.config import HoliTokConfig
from holitok.harmonic_head import REFERENCE_LOG2_F0, HarmonicISTFTHead, add_harmonic_branch
from holitok.train.checkpointing import initialise_from
from holitok.train.config import load_config
from holitok.train.toy_assets import write_clips
from holitok.train.train_model import TokenizerTrainModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"
SMALL = dict(latent_dim=8, mi_num_layers=1, encoder_frontend="stft", frontend_hop=480, frontend_n_fft=960,
             downsample_rates=[4], downsample_channels=[16, 24], upsample_rates=[4], upsample_kernel_sizes=[8],
             upsample_initial_channel=32, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
             istft_n_fft=1920)


def _model(head: str, seed: int = 0) -> HoliTok:
    torch.manual_seed(seed)
    model = HoliTok(HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), **SMALL, "decoder_head": head}))
    model.reset_parameters()
    return model.eval()


def _spectrum_peaks(frame: torch.Tensor, sample_rate: int, count: int) -> list[float]:
    spectrum = torch.fft.rfft(frame.double() * torch.hann_window(frame.shape[-1], dtype=torch.float64)).abs()
    bins = spectrum[: int(2000 * frame.shape[-1] / sample_rate)]  # below 2 kHz
    local = (bins[1:-1] > bins[:-2]) & (bins[1:-1] > bins[2:]) & (bins[1:-1] > 0.3 * bins.max())
    return [float(i + 1) * sample_rate / frame.shape[-1] for i in torch.nonzero(local)[:count, 0]]


def test_pulse_train_has_harmonics_at_the_f0_and_a_phase_that_runs_on_across_frames():
    head = HarmonicISTFTHead(channels=4, n_fft=1920, hop=480, sample_rate=48000)
    f0 = 210.0
    pulses, after = head.pulse_train(torch.full((1, 6), math.log2(f0)), torch.zeros(1, dtype=torch.long))
    peaks = _spectrum_peaks(pulses[0, 2], 48000, 4)
    assert peaks == pytest.approx([f0, 2 * f0, 3 * f0, 4 * f0], abs=25.0)  # 25 Hz bins
    # every harmonic below 0.45 x 48 kHz, amplitude 1: the pulse peak is their count
    assert float(pulses.max()) == pytest.approx(math.floor(0.45 * 48000 / f0), rel=0.02)
    # constant F0: frame t+1 continues frame t one hop later (one running phase, not a restart per frame)
    assert torch.allclose(pulses[0, 3, :-480], pulses[0, 2, 480:], atol=1e-3)
    # the phase after six frames: 6 hops of 210 Hz = 6 * 480 * 210 / 48000 = 12.6 cycles -> 0.6
    assert float(after[0]) / 2 ** 32 == pytest.approx(0.6, abs=1e-5)  # F0 passes through float32 log2
    # an F0 outside the head's bounds drives the pulse train at the bound, never at 0 Hz or past Nyquist
    low, _ = head.pulse_train(torch.full((1, 3), -20.0), torch.zeros(1, dtype=torch.long))
    assert _spectrum_peaks(low[0, 1], 48000, 2) == pytest.approx([50.0, 100.0], abs=25.0)


def test_streaming_the_harmonic_decoder_equals_one_offline_pass():
    model = _model("harmonic")
    latents = torch.randn(2, 8, 13, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        offline = model.forward_decode(latents)
        peak = offline.abs().max()
        for cuts in ([1, 2, 7], [5], [3, 4, 11, 12]):
            stream = model.stream_decoder()
            edges = [0, *cuts, latents.shape[-1]]
            parts = [stream.step(latents[..., a:b]) for a, b in zip(edges[:-1], edges[1:])] + [stream.flush()]
            # The pulse train's peaks are as tall as its harmonic count and as steep as its square, so the float32
            # rounding of chunked convolutions (1e-7 of the features) shows up at ~3e-3 of the output's peak on
            # this AVX-512 machine (earlier machines kept it under 1e-5 absolute); a phase not carried across chunks
            # gives ~1.0 (measured by dropping the carried phase after every chunk).
            assert (torch.cat(parts, -1) - offline).abs().max() <= 1e-2 * peak
        audio, pitch = model.forward_decode(latents, with_pitch=True)
    assert torch.equal(audio, offline) and pitch.shape == (2, 2, 13 * 4)
    with pytest.raises(ValueError, match="need decoder_head 'harmonic'"):
        _model("istft").forward_decode(latents, with_pitch=True)


def test_an_istft_checkpoint_becomes_a_harmonic_one_with_its_gains_and_round_trips(tmp_path):
    istft, harmonic = _model("istft", seed=1), _model("harmonic", seed=2)
    state = istft.state_dict()
    assert add_harmonic_branch(state, harmonic.decoder.head, "decoder.head.")
    assert not add_harmonic_branch(state, harmonic.decoder.head, "decoder.head.")  # only once
    harmonic.load_state_dict(state, strict=True)
    head, bins = harmonic.decoder.head, harmonic.decoder.head.bins
    with torch.no_grad():
        assert torch.equal(head.harmonic_proj.get_weight()[:bins], istft.decoder.head.proj.get_weight()[:bins])
        # with the voicing shut the harmonic head is the istft head it came from
        head.harmonic_proj.bias[bins + 1] = -1e4
        latents = torch.randn(1, 8, 6, generator=torch.Generator().manual_seed(4))
        assert torch.allclose(harmonic.forward_decode(latents), istft.forward_decode(latents), atol=1e-6)
    harmonic.save_pretrained(tmp_path / "m")
    loaded = HoliTok.from_pretrained(tmp_path / "m", device="cpu").eval()
    with torch.no_grad():
        assert torch.equal(loaded.forward_decode(latents), harmonic.forward_decode(latents))
    with pytest.raises(ValueError, match="authors' runtime has no 'harmonic'"):
        export_runtime_checkpoint(harmonic, tmp_path / "model.pt")
    broken = {k: v for k, v in istft.state_dict().items() if k != "decoder.head.proj.bias"}
    with pytest.raises(KeyError, match="decoder.head.proj.bias is missing"):
        add_harmonic_branch(broken, harmonic.decoder.head, "decoder.head.")


def _harmonic_stage1(tmp_path, *extra):
    manifest = write_clips(tmp_path / "clips", count=2, seconds=0.8)
    return load_config(CONFIGS / "tiny_stage1.yaml", [
        f"data.train={manifest}", f"output_dir={tmp_path / 'run'}", "init_from=null", "model.preset=cpu-small",
        "model.overrides.decoder_head=harmonic", *extra])


def test_the_pitch_term_trains_the_heads_f0_through_the_encoder_and_is_required(tmp_path):
    with pytest.raises(ValueError, match="trains its F0 only through loss_weights.pitch"):
        TokenizerTrainModel(_harmonic_stage1(tmp_path))
    model = TokenizerTrainModel(_harmonic_stage1(tmp_path, "loss_weights.pitch=10"))
    assert model.pitch_head is None  # the head's own F0 is what the term supervises
    n = torch.arange(int(0.8 * 48000), dtype=torch.float64) / 48000
    phase = 2 * math.pi * torch.cumsum(120 * 2 ** (n / 0.8) / 48000, 0)
    audio = (0.3 * sum(torch.sin(k * phase) / k for k in range(1, 12))).float()[None, None]
    output = model(audio, torch.tensor([audio.shape[-1]]))
    assert set(output.losses) == {"pitch"} and float(output.losses["pitch"].detach()) > 0
    output.losses["pitch"].backward()
    encoder_grads = [p.grad for name, p in model.holitok.named_parameters() if name.startswith("audio_encoder.")]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in encoder_grads)
    # the F0 channel reads REFERENCE-relative log2 F0, like the latent pitch head's
    assert REFERENCE_LOG2_F0 == pytest.approx(math.log2(150.0))
    # harmonic_f0 'tracker': the same weights, the pulse train at the glide's F0 instead of the head's guess
    forced = TokenizerTrainModel(_harmonic_stage1(tmp_path, "loss_weights.pitch=10",
                                                  "stage_options.harmonic_f0=tracker"))
    forced.load_state_dict(model.state_dict())
    torch.manual_seed(0)
    with torch.no_grad():
        own = model(audio, torch.tensor([audio.shape[-1]])).audio
        driven = forced(audio, torch.tensor([audio.shape[-1]])).audio
    assert not torch.allclose(own, driven, atol=1e-4)
    with pytest.raises(ValueError, match="'predicted' or 'tracker'"):
        TokenizerTrainModel(_harmonic_stage1(tmp_path, "loss_weights.pitch=10", "stage_options.harmonic_f0=yin"))
    with pytest.raises(ValueError, match="needs decoder_head 'harmonic'"):
        TokenizerTrainModel(_harmonic_stage1(tmp_path, "model.overrides.decoder_head=istft",
                                             "stage_options.harmonic_f0=tracker"))


def test_a_stage_can_start_a_harmonic_head_from_an_istft_tokenizer(tmp_path):
    istft = _model("istft", seed=5)
    istft.save_pretrained(tmp_path / "istft")
    config = load_config(CONFIGS / "tiny_stage1.yaml", [
        f"data.train={write_clips(tmp_path / 'clips', count=1, seconds=0.8)}", f"output_dir={tmp_path / 'run'}",
        "init_from=null", "model.preset=tiny", "loss_weights.pitch=10",
        *[f"model.overrides.{k}={v}" for k, v in {**SMALL, "decoder_head": "harmonic"}.items()]])
    model = TokenizerTrainModel(config)
    notes = initialise_from(tmp_path / "istft", model, torch.nn.Module())
    assert any("harmonic_proj added" in note for note in notes)
    assert torch.equal(model.holitok.decoder.head.proj.get_weight(), istft.decoder.head.proj.get_weight())


def test_a_stage_adds_the_long_window_to_a_tokenizer_without_one_at_zero(tmp_path):
    plain = _model("istft", seed=6)
    plain.save_pretrained(tmp_path / "plain")
    config = load_config(CONFIGS / "tiny_stage1.yaml", [
        f"data.train={write_clips(tmp_path / 'clips', count=1, seconds=0.8)}", f"output_dir={tmp_path / 'run'}",
        "init_from=null", "model.preset=tiny",
        *[f"model.overrides.{k}={v}"
          for k, v in {**SMALL, "decoder_head": "istft", "frontend_long_n_fft": 3840}.items()]])
    model = TokenizerTrainModel(config)
    notes = initialise_from(tmp_path / "plain", model, torch.nn.Module())
    assert any("long_proj added at zero" in note for note in notes)
    audio = torch.randn(1, 1, 4 * 1920, generator=torch.Generator().manual_seed(7)) * 0.1
    with torch.no_grad():
        assert torch.equal(model.holitok.forward_posterior(audio), plain.forward_posterior(audio))


def test_the_voicing_mix_hands_voiced_frames_to_the_pulse_train():
    added, mixed = _model("harmonic", seed=8), _model("harmonic", seed=8)
    mixed.decoder.head.mix = "voicing"
    config = HoliTokConfig.from_dict({**mixed.config.to_dict(), "harmonic_mix": "voicing"})
    assert HoliTok(config).decoder.head.mix == "voicing" and config.to_dict()["harmonic_mix"] == "voicing"
    latents = torch.randn(1, 8, 6, generator=torch.Generator().manual_seed(9))
    head, bins = mixed.decoder.head, mixed.decoder.head.bins
    with torch.no_grad():
        for model in (added, mixed):
            model.decoder.head.harmonic_proj.bias[bins + 1] = 1e4  # every frame voiced
        pulses_only = mixed.forward_decode(latents)
        head.proj.bias[: bins] = -1e3  # silence the istft path: with the voicing mix nothing changes
        assert torch.allclose(mixed.forward_decode(latents), pulses_only, atol=1e-6)
        added.decoder.head.proj.bias[: bins] = -1e3
        assert torch.allclose(added.forward_decode(latents), pulses_only, atol=1e-6)  # ... the pulses alone
    with pytest.raises(ValueError, match="harmonic_mix only applies to decoder_head 'harmonic'"):
        HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), **SMALL, "decoder_head": "istft",
                                 "harmonic_mix": "voicing"})


def test_the_reports_f0_oracle_drives_the_pulse_train_with_the_originals_tracked_f0():
    from eval.report import Reporter
    from holitok.pitch_track import yin_track

    model = _model("harmonic", seed=7)
    with torch.no_grad():  # voicing open, so the pulse train is heard
        model.decoder.head.harmonic_proj.bias[model.decoder.head.bins + 1] = 4.0
    n = torch.arange(int(0.8 * 48000), dtype=torch.float64) / 48000
    phase = 2 * math.pi * torch.cumsum(140 * 2 ** (n / 0.8) / 48000, 0)
    audio = (0.3 * sum(torch.sin(k * phase) / k for k in range(1, 12))).float()
    reporter = Reporter(model, None, None, None, ("resynth",), resynth_f0="tracker")
    with torch.no_grad():
        latents = model.encode(audio[None, None])
        oracle = reporter._resynthesise(audio, latents)
        track = yin_track(audio[None], model.sample_rate, model.config.istft_hop)
        frames = latents.shape[-1] * (model.hop_size // model.config.istft_hop)
        expected = model.forward_decode(latents, log2_f0=track.pulse_f0(frames))
        own = Reporter(model, None, None, None, ("resynth",))._resynthesise(audio, latents)
    assert bool(track.voiced.any())  # the glide is tracked, so the oracle has an F0 to impose
    assert torch.equal(oracle, expected) and not torch.allclose(oracle, own, atol=1e-4)
    pulse, count = track.pulse_f0(frames), min(frames, track.voiced.shape[1])
    voiced = track.voiced[:, :count]
    assert torch.equal(pulse[:, :count][voiced], track.log2_f0[:, :count][voiced])
    assert torch.all(pulse[:, :count][~voiced] == REFERENCE_LOG2_F0)
    assert torch.all(pulse[:, count:] == REFERENCE_LOG2_F0)
    with pytest.raises(ValueError, match="drives a harmonic head"):
        Reporter(_model("istft"), None, None, None, ("resynth",), resynth_f0="tracker")


def test_the_pitch_probe_reports_the_pulse_trains_share_of_the_output(tmp_path):
    import soundfile as sf

    from data_prep.manifest import ManifestRecord
    from eval.latent_pitch_probe import decoder_pitch

    n = torch.arange(int(0.8 * 48000), dtype=torch.float64) / 48000
    phase = 2 * math.pi * torch.cumsum(140 * 2 ** (n / 0.8) / 48000, 0)
    sf.write(tmp_path / "a.wav", (0.3 * sum(torch.sin(k * phase) / k for k in range(1, 12))).numpy(), 48000)
    records = [ManifestRecord("a", str(tmp_path / "a.wav"), 0.8, "a", "en", "v")]
    model = _model("harmonic", seed=8)
    bias = model.decoder.head.harmonic_proj.bias
    shares = []
    for voicing_logit in (-1e4, 4.0):  # shut, then open
        with torch.no_grad():
            bias[model.decoder.head.bins + 1] = voicing_logit
        shares.append(decoder_pitch(model, records)["decoder_f0"]["pulse_energy_share"])
    assert shares[0] == 0.0 and 0.0 < shares[1] < 1.0
    # the hook is removed afterwards: decoding again leaves the head untouched
    assert not model.decoder.activation_post._forward_hooks


def test_a_stage_adds_the_head_branch_to_a_tokenizer_without_one_at_zero(tmp_path):
    plain = _model("istft", seed=10)
    plain.save_pretrained(tmp_path / "plain")
    config = load_config(CONFIGS / "tiny_stage1.yaml", [
        f"data.train={write_clips(tmp_path / 'clips', count=1, seconds=0.8)}", f"output_dir={tmp_path / 'run'}",
        "init_from=null", "model.preset=tiny",
        *[f"model.overrides.{k}={v}" for k, v in {**SMALL, "decoder_head": "istft", "istft_hidden": 16}.items()]])
    model = TokenizerTrainModel(config)
    notes = initialise_from(tmp_path / "plain", model, torch.nn.Module())
    assert any("decoder.head.branch added at zero" in note for note in notes)
    latents = torch.randn(1, 8, 6, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        assert torch.equal(model.holitok.eval().forward_decode(latents), plain.forward_decode(latents))


def test_a_stage_turns_an_absolute_phase_head_into_a_summed_advance_one(tmp_path):
    absolute = _model("istft", seed=12)
    absolute.save_pretrained(tmp_path / "absolute")
    overrides = {**SMALL, "decoder_head": "istft", "istft_phase": "advance"}
    config = load_config(CONFIGS / "tiny_stage1.yaml", [
        f"data.train={write_clips(tmp_path / 'clips', count=1, seconds=0.8)}", f"output_dir={tmp_path / 'run'}",
        "init_from=null", "model.preset=tiny", *[f"model.overrides.{k}={v}" for k, v in overrides.items()]])
    model = TokenizerTrainModel(config)
    notes = initialise_from(tmp_path / "absolute", model, torch.nn.Module())
    assert any("phase rows zeroed" in note for note in notes)
    head, source = model.holitok.decoder.head, absolute.decoder.head
    assert float(head.proj.get_weight().detach()[head.bins:].abs().sum()) == 0.0  # each bin starts at its centre
    assert torch.equal(head.proj.get_weight()[: head.bins], source.proj.get_weight()[: head.bins])
    # a stage started from an advance tokenizer keeps its phase rows
    model.holitok.save_pretrained(tmp_path / "advance")
    again = TokenizerTrainModel(config)
    assert not any("phase rows zeroed" in note for note in initialise_from(tmp_path / "advance", again,
                                                                           torch.nn.Module()))
