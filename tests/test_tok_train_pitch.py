"""The pitch supervision of tokenizer training: the YIN tracker, the head's loss, and the stage term it adds."""

import math
from pathlib import Path

import pytest
import torch

from holitok.train.config import load_config
from holitok.pitch_track import PitchTrack, yin_track
from holitok.train.pitch import REFERENCE_LOG2_F0, PitchHead, pitch_loss
from holitok.train.toy_assets import write_clips
from holitok.train.train_model import TokenizerTrainModel

SR, HOP = 48000, 1920
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


def glide(seconds=1.5, start=90.0, octaves=1.0, harmonics=15):
    """A harmonic tone gliding up `octaves` over its length, and its true F0 at each latent frame's centre."""
    n = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    f0 = start * 2 ** (octaves * n / seconds)
    phase = 2 * math.pi * torch.cumsum(f0 / SR, 0)
    audio = sum(torch.sin(k * phase) / k for k in range(1, harmonics + 1)).float() * 0.3
    centres = (torch.arange(len(n) // HOP) + 0.5) * HOP / SR
    return audio, torch.log2(start * 2 ** (octaves * centres / seconds)).float()


def test_yin_follows_a_gliding_harmonic_tone_and_calls_noise_and_silence_unvoiced():
    audio, truth = glide()
    track = yin_track(audio[None], SR, HOP)
    assert track.voiced.shape == truth[None].shape and bool(track.voiced[0, 1:-1].all())
    cents = (track.log2_f0[0, 1:-1] - truth[1:-1]).abs() * 1200
    assert float(cents.max()) < 15.0  # an octave error would be 1200
    generator = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(SR, generator=generator)
    quiet = torch.zeros(SR)
    track = yin_track(torch.stack([noise, quiet])[:, None], SR, HOP)
    assert not bool(track.voiced.any())
    with pytest.raises(ValueError, match="multiple of 16000"):
        yin_track(audio[None], 44100, HOP)


def test_pitch_loss_counts_f0_only_where_voiced_and_reaches_the_latents():
    track = PitchTrack(log2_f0=torch.tensor([[7.0, 8.0, 7.5, 9.0]]), voiced=torch.tensor([[True, True, False, True]]))
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last frame is padding
    exact = torch.stack([track.log2_f0 - REFERENCE_LOG2_F0, torch.tensor([[30.0, 30.0, -30.0, 30.0]])], dim=1)
    assert float(pitch_loss(exact, track, mask)) < 1e-6
    wrong_unvoiced = exact.clone()
    wrong_unvoiced[0, 0, 2] += 5.0  # an F0 error on an unvoiced frame costs nothing
    wrong_unvoiced[0, 0, 3] += 5.0  # nor on padding
    assert float(pitch_loss(wrong_unvoiced, track, mask)) < 1e-6
    one_octave = exact.clone()
    one_octave[0, 0, :2] += 1.0
    assert float(pitch_loss(one_octave, track, mask)) == pytest.approx(1.0, abs=1e-4)
    head = PitchHead(latent_dim=8, hidden=16)
    z = torch.randn(1, 8, 4, requires_grad=True)
    pitch_loss(head(z), track, mask).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_the_pitch_weight_adds_a_head_and_a_term_that_trains_the_encoder(tmp_path):
    manifest = write_clips(tmp_path / "clips", count=2, seconds=0.8)
    common = [f"data.train={manifest}", f"output_dir={tmp_path / 'run'}", "init_from=null"]
    plain = TokenizerTrainModel(load_config(CONFIGS / "tiny_stage1.yaml", common))
    assert plain.pitch_head is None
    config = load_config(CONFIGS / "tiny_stage1.yaml", common + ["loss_weights.pitch=10"])
    model = TokenizerTrainModel(config)
    assert model.pitch_head is not None
    audio, _ = glide(seconds=0.8)
    output = model(audio[None, None], torch.tensor([audio.shape[-1]]))
    assert set(output.losses) == {"pitch"} and float(output.losses["pitch"].detach()) > 0
    output.losses["pitch"].backward()
    encoder_grads = [p.grad for name, p in model.holitok.named_parameters() if name.startswith("audio_encoder.")]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in encoder_grads)
