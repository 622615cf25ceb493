"""Tokenizer training building blocks: mel/CQT front ends, decimation, discriminators, GAN losses, the KL flow."""

import math

import pytest
import torch

from holitok.train.cqt import ConstantQTransform
from holitok.train.discriminators import DiscriminatorConfig, Discriminators
from holitok.train.discriminator_cqt import CQTDConfig
from holitok.train.discriminator_mpd import MPDConfig
from holitok.train.filters import Decimator
from holitok.train.flow import LatentFlowConfig, LatentFlow, flow_kl
from holitok.train.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from holitok.train.mel import (LogMelSpectrogram, MelLossConfig, MultiScaleMelLoss, hz_to_mel_slaney,
                               mel_filterbank, mel_to_hz_slaney)

SR = 48000


def tone(freq, seconds=0.5, sr=SR):
    t = torch.arange(int(seconds * sr)) / sr
    return torch.sin(2 * math.pi * freq * t)


def test_slaney_mel_scale_known_points_and_inverse():
    hz = torch.tensor([0.0, 440.0, 1000.0, 2000.0, 8000.0], dtype=torch.float64)
    mel = hz_to_mel_slaney(hz)
    # Linear part: f / (200/3); log part: 15 + 27 * ln(f/1000) / ln(6.4).
    assert mel[1].item() == pytest.approx(6.6)
    assert mel[2].item() == pytest.approx(15.0)
    assert mel[3].item() == pytest.approx(15 + 27 * math.log(2) / math.log(6.4))
    assert torch.allclose(mel_to_hz_slaney(mel), hz)


def test_mel_filters_are_unit_area_triangles_peaking_at_their_centres():
    n_fft, n_mels = 8192, 40
    fb = mel_filterbank(SR, n_fft, n_mels, 0, 12000).double()
    bin_hz = SR / n_fft
    # Slaney normalisation: each triangle integrates to 1 over Hz.
    assert torch.allclose(fb.sum(1) * bin_hz, torch.ones(n_mels, dtype=torch.float64), atol=0.02)
    edges = mel_to_hz_slaney(torch.linspace(0, float(hz_to_mel_slaney(torch.tensor(12000.0))), n_mels + 2))
    peaks = fb.argmax(1).double() * bin_hz
    assert torch.allclose(peaks, edges[1:-1].double(), atol=bin_hz)


def test_log_mel_of_a_tone_peaks_in_the_band_containing_it():
    spec = LogMelSpectrogram(SR, 2048, 512, 64, 0, 8000)(tone(1000.0)[None])
    centres = mel_to_hz_slaney(torch.linspace(0, float(hz_to_mel_slaney(torch.tensor(8000.0))), 66))[1:-1]
    band = int(spec[0, :, 5:-5].mean(-1).argmax())
    assert abs(centres[band].item() - 1000.0) < 100.0


def test_multiscale_mel_loss_zero_on_identity_grows_with_distortion_and_reduces_over_scales():
    torch.manual_seed(0)
    x = 0.3 * tone(300.0)[None, None] + 0.01 * torch.randn(1, 1, SR // 2)
    config = MelLossConfig(n_mels=[20, 40], window_lengths=[256, 1024])
    loss = MultiScaleMelLoss(SR, config)
    assert loss(x, x).item() == 0.0
    small, large = loss(x * 0.9, x).item(), loss(x * 0.3, x).item()
    assert 0 < small < large
    summed = MultiScaleMelLoss(SR, MelLossConfig(n_mels=[20, 40], window_lengths=[256, 1024], reduction="sum"))
    assert summed(x * 0.3, x).item() == pytest.approx(2 * large, rel=1e-5)
    with pytest.raises(ValueError, match="equal shapes"):
        loss(x[..., :-1], x)


@pytest.mark.parametrize("freq", [110.0, 440.0, 2500.0, 9000.0])
def test_cqt_tone_lands_on_its_bin_in_every_octave(freq):
    fmin, bins = 32.70, 24
    cqt = ConstantQTransform(SR, 512, 9, bins, fmin)
    out = cqt(tone(freq)[None, None])
    assert out.shape == (1, 2, 9 * bins, math.ceil(SR / 2 / 512))
    magnitude = out.pow(2).sum(1).sqrt()[0, :, 4:-4].mean(-1)
    expected = round(bins * math.log2(freq / fmin))
    assert abs(int(magnitude.argmax()) - expected) <= 1
    # A unit sine gives about 1/4 through an L1-normalised Hann filter, whichever octave it falls in.
    assert 0.35 < magnitude.max().item() < 0.55


def test_cqt_rejects_hops_lower_octaves_cannot_use_and_bins_above_nyquist():
    with pytest.raises(ValueError, match="divisible"):
        ConstantQTransform(SR, 100, 9, 24)
    with pytest.raises(ValueError, match="Nyquist"):
        ConstantQTransform(SR, 1024, 10, 24)


def test_decimator_keeps_passband_and_removes_aliases():
    decimate = Decimator(3)
    low = decimate(tone(1000.0)[None])
    high = decimate(tone(12000.0)[None])  # above the new 8 kHz Nyquist: must not fold back
    assert low.shape[-1] == math.ceil(SR / 2 / 3)
    mid = slice(200, -200)
    assert low[0, mid].abs().max().item() == pytest.approx(1.0, abs=0.02)
    assert high[0, mid].abs().max().item() < 0.01


def tiny_discriminators():
    config = DiscriminatorConfig(
        mpd=MPDConfig(periods=[2, 3], channels=[4, 8, 8]),
        cqt=CQTDConfig(hop_lengths=[256], n_octaves=[6], bins_per_octave=[12], fmin=65.4, channels=4,
                       dilations=[1, 2]))
    return Discriminators(SR, config)


def test_discriminators_score_real_and_fake_as_if_run_separately():
    torch.manual_seed(0)
    disc = tiny_discriminators()
    real, fake = 0.1 * torch.randn(2, 1, 9600), 0.1 * torch.randn(2, 1, 9600)
    joint = disc(real, fake)
    alone = disc(fake, real)  # the fake half of this call is `real`
    assert len(joint.real_logits) == 2 + 1
    for a, b in zip(joint.real_logits, alone.fake_logits):
        assert torch.allclose(a, b, atol=1e-6)
    for maps_a, maps_b in zip(joint.fake_features, alone.real_features):
        for a, b in zip(maps_a, maps_b):
            assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        disc(real, fake[..., :-1])


def test_lsgan_and_feature_matching_values_and_gradients():
    disc = tiny_discriminators()
    out = disc(torch.zeros(1, 1, 4800), torch.zeros(1, 1, 4800))
    n = len(out.real_logits)
    out.real_logits = [torch.ones(1, 3) for _ in range(n)]
    out.fake_logits = [torch.full((1, 3), 0.5, requires_grad=True) for _ in range(n)]
    assert discriminator_loss(out).item() == pytest.approx(n * 0.25)
    assert generator_adversarial_loss(out).item() == pytest.approx(n * 0.25)
    real = [[torch.ones(2, 2, requires_grad=True)]]
    fake = [[torch.full((2, 2), 3.0, requires_grad=True)]]
    out.real_features, out.fake_features = real, fake
    fm = feature_matching_loss(out)
    assert fm.item() == pytest.approx(2.0)
    fm.backward()
    assert real[0][0].grad is None  # real features are targets, not trained through
    assert torch.allclose(fake[0][0].grad, torch.full((2, 2), 0.25))


def randomised_flow(dim=4, seed=0):
    torch.manual_seed(seed)
    flow = LatentFlow(dim, LatentFlowConfig(num_couplings=3, hidden_channels=8, kernel_size=3))
    for coupling in flow.couplings:  # leave the zero (identity) initialisation to exercise real scales/shifts
        torch.nn.init.normal_(coupling.out.weight, std=0.3)
        torch.nn.init.normal_(coupling.out.bias, std=0.3)
    return flow


def test_flow_is_invertible_and_leaves_padded_frames_at_zero():
    flow = randomised_flow()
    z = torch.randn(2, 4, 7)
    mask = torch.ones(2, 1, 7)
    mask[1, :, 5:] = 0
    z = z * mask
    y, _ = flow(z, mask)
    assert torch.allclose(flow.inverse(y, mask), z, atol=1e-5)
    assert torch.all(y[1, :, 5:] == 0)


def test_flow_log_determinant_matches_the_brute_force_jacobian():
    flow = randomised_flow().double()
    z = torch.randn(1, 4, 4, dtype=torch.float64)
    mask = torch.ones(1, 1, 4, dtype=torch.float64)
    _, logdet = flow(z, mask)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v.view(1, 4, 4), mask)[0].reshape(-1), z.reshape(-1),
                                             vectorize=True)
    assert logdet.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=1e-8)


def test_flow_kl_at_identity_is_the_gaussian_kl_against_the_standard_normal():
    torch.manual_seed(0)
    mu, log_std = torch.randn(1, 4, 1) * 0.7, torch.randn(1, 4, 1) * 0.3
    mask = torch.ones(1, 1, 20000)
    mu, log_std = mu.expand(1, 4, 20000), log_std.expand(1, 4, 20000)
    z = mu + torch.randn_like(mu) * log_std.exp()
    analytic = (0.5 * (mu ** 2 + (2 * log_std).exp()) - log_std - 0.5).mean()
    identity = LatentFlow(4, LatentFlowConfig(num_couplings=2, hidden_channels=8))
    assert flow_kl(z, log_std, mask, identity).item() == pytest.approx(analytic.item(), abs=0.02)
    assert flow_kl(z, log_std, mask, None).item() == pytest.approx(analytic.item(), abs=0.02)
    # A non-trivial flow changes the prior, hence the KL; padded frames never count.
    assert flow_kl(z, log_std, mask, randomised_flow()).item() != pytest.approx(analytic.item(), abs=0.02)
    half = mask.clone()
    half[..., 10000:] = 0
    z_pad = z.clone()
    z_pad[..., 10000:] = 1e3
    assert flow_kl(z_pad, log_std, half, None).item() == pytest.approx(analytic.item(), abs=0.03)


def test_phase_derivative_loss_ignores_gain_and_sees_phase_that_magnitude_misses():
    from holitok.train.phase_loss import PhaseDerivativeLoss, PhaseLossConfig

    torch.manual_seed(0)
    sr, n = 48000, 9600
    t = torch.arange(n) / sr
    harmonics = sum(torch.sin(2 * math.pi * 150 * k * t + k) / k for k in range(1, 20))
    target = (harmonics * torch.hann_window(n))[None, None]
    loss = PhaseDerivativeLoss(PhaseLossConfig(window_lengths=[512, 2048]))
    assert float(loss(target, target)) < 1e-5
    assert float(loss(0.5 * target, target)) < 1e-5  # a gain changes no phase difference
    # Same magnitudes frame by frame, incoherent phase: the STFT with its phases randomised, then resynthesised.
    window = torch.hann_window(512)
    spec = torch.stft(target[0], 512, 128, window=window, return_complex=True)
    scrambled = torch.polar(spec.abs(), torch.rand_like(spec.real) * 2 * math.pi)
    noisy = torch.istft(scrambled, 512, 128, window=window, length=n)[None]
    assert float(loss(noisy, target)) > 0.5
    prediction = noisy.clone().requires_grad_(True)
    loss(prediction, target).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal shapes"):
        loss(target[..., :-1], target)


def test_phase_loss_is_an_optional_term_of_every_stage():
    from holitok.train.config import load_config

    config = load_config(data={"stage": 1, "loss_weights": {"mel": 45.0, "adv": 1.0, "fm": 2.0, "phase": 5.0}})
    assert config.loss_weights["phase"] == 5.0
    with pytest.raises(ValueError, match="optional"):
        load_config(data={"stage": 1, "loss_weights": {"mel": 45.0, "adv": 1.0, "fm": 2.0, "kl": 1.0}})


def test_spectrum_loss_sees_a_pitch_error_that_the_mel_loss_pools_away():
    from holitok.train.mel import MelLossConfig, MultiScaleMelLoss
    from holitok.train.spectrum_loss import LinearSpectrumLoss, SpectrumLossConfig

    sr, n = 48000, 19200
    t = torch.arange(n) / sr

    def voice(f0):  # harmonics under one fixed formant envelope: only the pitch differs
        return sum(torch.sin(2 * math.pi * f0 * k * t) * math.exp(-((f0 * k - 700) / 900) ** 2) / k
                   for k in range(1, int(6000 // f0)))[None, None]

    target, detuned, far = voice(120.0), voice(128.0), voice(150.0)
    spectrum = LinearSpectrumLoss(sr, SpectrumLossConfig(window_lengths=[2048, 4096], fmax=8000.0))
    mel = MultiScaleMelLoss(sr, MelLossConfig(n_mels=[40, 80, 128, 160], window_lengths=[256, 512, 1024, 2048]))
    assert float(spectrum(target, target)) < 1e-6
    # The detuned voice has the same envelope: relative to a far-off pitch, the linear loss keeps more of the error.
    spectrum_ratio = float(spectrum(detuned, target)) / float(spectrum(far, target))
    mel_ratio = float(mel(detuned, target)) / float(mel(far, target))
    assert float(spectrum(detuned, target)) > 0.3 and spectrum_ratio > mel_ratio
    assert spectrum.bins[2048] == int(8000 * 2048 / sr) + 1
    prediction = detuned.clone().requires_grad_(True)
    spectrum(prediction, target).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal shapes"):
        spectrum(target[..., :-1], target)
    with pytest.raises(ValueError, match="window_lengths"):
        SpectrumLossConfig(window_lengths=[])


def test_spectrum_loss_is_an_optional_term_that_the_trainer_config_accepts():
    from holitok.train.config import load_config

    config = load_config(data={"stage": 1, "loss_weights": {"mel": 45.0, "adv": 1.0, "fm": 2.0, "spectrum": 20.0},
                               "spectrum_loss": {"window_lengths": [1024], "fmax": 4000.0}})
    assert config.loss_weights["spectrum"] == 20.0 and config.spectrum_loss.window_lengths == [1024]
