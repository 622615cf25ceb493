"""holitok_slm/widen.py: a unified model (and its aligner) widened to more latent channels reads and writes the old
channels exactly as before and knows the new ones as pitch channels (their own sampling temperature in TTS);
train.trainable_prefixes freezes the rest."""
from __future__ import annotations

import pytest
import torch

from holitok_slm.model.ctc_aligner import CTCAligner, CTCAlignerConfig
from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.tiny import build_tiny_model, randomize_heads, tiny_config
from holitok_slm.train.model_setup import freeze_all_but
from holitok_slm.widen import main, widen_model, widen_state

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def _model(tmp_path) -> UnifiedModel:
    cfg = tiny_config("patch")
    cfg.text_pointer, cfg.text_pointer_alignment = True, "forced"
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))
    torch.manual_seed(3)
    model.attach_aligner(CTCAligner(CTCAlignerConfig(latent_dim=16, width=32), model.text_tokenizer).eval())
    return model


def test_widened_model_reads_and_writes_the_old_channels_as_before(tmp_path):
    model = _model(tmp_path / "m")
    wide = widen_model(model, 20)
    assert wide.config.latent_dim == 20 and wide.aligner.config.latent_dim == 20
    torch.manual_seed(0)
    patch = torch.randn(2, 4, 16)
    extra = torch.randn(2, 4, 4) * 3
    with torch.no_grad():
        # the backbone's input: the new channels are read by zero columns
        assert torch.allclose(wide.embed_patch(torch.cat([patch, extra], -1)), model.embed_patch(patch), atol=1e-6)
        # the flow head: the old channels' velocity is unchanged, the new channels' starts at zero
        noisy, history = torch.randn(2, 4, 16), torch.randn(2, 4, 16)
        t, condition = torch.rand(2), torch.randn(2, model.config.dit.hidden_size)
        old = model.dit(noisy, t, condition, history)
        new = wide.dit(torch.cat([noisy, extra], -1), t, condition, torch.cat([history, extra], -1))
        assert torch.allclose(new[..., :16], old, atol=1e-6) and (new[..., 16:] == 0).all()
        # the aligner times a transcript from the wider latents exactly as from the old ones
        latents = torch.randn(1, 30, 16)
        wider = torch.cat([latents, torch.randn(1, 30, 4) * 5], -1)
        assert torch.allclose(wide.aligner(wider), model.aligner(latents), atol=1e-6)


def test_cli_saves_a_loadable_model_and_refuses_a_used_folder(tmp_path):
    model = _model(tmp_path / "m")
    model.save_pretrained(tmp_path / "src")
    main(["--model", str(tmp_path / "src"), "--latent_dim", "24", "--out", str(tmp_path / "wide")])
    loaded = UnifiedModel.from_pretrained(tmp_path / "wide")
    assert loaded.config.latent_dim == 24 and loaded.aligner is not None
    with pytest.raises(SystemExit, match="not empty"):
        main(["--model", str(tmp_path / "src"), "--latent_dim", "24", "--out", str(tmp_path / "wide")])
    with pytest.raises(ValueError, match="already has 16"):
        widen_model(model, 16)
    assert loaded.config.pitch_channels == 8  # all the new channels, unless told otherwise
    assert widen_model(model, 24, pitch_channels=2).config.pitch_channels == 2
    with pytest.raises(ValueError, match="among the 8 new ones"):
        widen_model(model, 24, pitch_channels=9)
    with pytest.raises(ValueError, match="has 8 already"):
        widen_model(loaded, 30)


def _generate(model, seed, **options):
    requests = [TTSRequest("the cat sat"), TTSRequest("hello world", prompt_latents=torch.randn(
        8, model.config.latent_dim, generator=torch.Generator().manual_seed(5)), prompt_text="a dog ran")]
    options = TTSOptions.from_model(model, max_patches=3, eos_threshold=2.0, **options)
    return torch.cat([r.latents for r in generate_latents(model, requests, options, torch.Generator().manual_seed(seed))])


def test_pitch_channels_start_from_their_own_temperature(tmp_path):
    model = _model(tmp_path / "m")
    cfg = model.config
    assert cfg.generation.pitch_temperature == 0.0 and cfg.pitch_channels == 0
    plain = _generate(model, 1, temperature=0.8, pitch_temperature=0.0)  # no pitch channels: no effect
    cfg.pitch_channels = 4
    scale = model.noise_scale(0.8, 0.1)
    assert torch.allclose(scale, torch.tensor([0.8] * 12 + [0.1] * 4))
    assert torch.equal(_generate(model, 1, temperature=0.8, pitch_temperature=0.8), plain)
    assert not torch.allclose(_generate(model, 1, temperature=0.8, pitch_temperature=0.0), plain, atol=1e-4)
    # with no noise anywhere the draw is the same for every seed; noise on the pitch channels alone changes it
    assert torch.equal(_generate(model, 1, temperature=0.0), _generate(model, 2, temperature=0.0))
    assert not torch.allclose(_generate(model, 1, temperature=0.0, pitch_temperature=1.0),
                              _generate(model, 2, temperature=0.0, pitch_temperature=1.0), atol=1e-4)
    with pytest.raises(ValueError, match="pitch_temperature"):
        TTSOptions.from_model(model, pitch_temperature=-1.0)
    with pytest.raises(ValueError, match="pitch_channels must be in"):
        type(cfg)(latent_dim=16, pitch_channels=16)


def test_pipeline_refuses_a_tokenizer_with_other_pitch_channels(tmp_path):
    from holitok import HoliTok, get_preset_config
    from holitok_slm.infer.pipeline import SpeechPipeline

    model = _model(tmp_path / "m")
    codec = HoliTok(get_preset_config("tiny"))
    assert codec.latent_dim == model.config.latent_dim and codec.pitch_channels == 0
    SpeechPipeline(model, codec)
    model.config.pitch_channels = 4
    with pytest.raises(ValueError, match="ends its latents with 0 pitch channels but the model was told 4"):
        SpeechPipeline(model, codec)


def test_widen_state_names_every_other_difference(tmp_path):
    model = _model(tmp_path / "m")
    own = widen_model(model, 20).state_dict()
    state = dict(model.state_dict())
    state["stop_head.proj.weight"] = torch.zeros(3, 3)
    state["surplus"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"stop_head\.proj\.weight: \(3, 3\) cannot become .*surplus unexpected"):
        widen_state(state, own, 16, 20, model.config.patch_size)


def test_trainable_prefixes_freeze_everything_else(tmp_path):
    model = _model(tmp_path / "m")
    count = freeze_all_but(model, ["dit."])
    trained = [name for name, p in model.named_parameters() if p.requires_grad]
    assert count == len(trained) > 0 and all(name.startswith("dit.") for name in trained)
    with pytest.raises(ValueError, match="no parameter starts with"):
        freeze_all_but(model, ["dit.", "ditt."])


def test_flow_loss_weighs_the_pitch_channels_by_pitch_weight(tmp_path):
    model = _model(tmp_path / "m").train()
    dit, channels = model.dit, model.config.latent_dim
    torch.manual_seed(0)
    target, history = torch.randn(3, 4, channels), torch.randn(3, 4, channels)
    condition = torch.randn(3, model.config.dit.hidden_size)

    def errors(weights=None):
        torch.manual_seed(5)  # the same time, noise and CFG dropout each call
        return dit.flow_matching_errors(target, condition, history, 0.0, 1.0, 0.1, None, weights)

    per_channel = torch.stack([errors(torch.eye(channels)[c] * channels) for c in range(channels)], -1)
    assert torch.allclose(per_channel.mean(-1), errors(), atol=1e-6)
    weights = torch.ones(channels)
    weights[-4:] = 3.0
    assert torch.allclose(errors(weights), (per_channel * weights).mean(-1), atol=1e-6)
    # in the model: pitch_weight 1 is the plain loss, another weight changes it only where pitch channels exist
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path / "plain", tiny_config("patch"))).train()
    batch = model.collate([dict(id=f"t{i}", task="tts", text=TEXTS[i], latents=torch.randn(
        24, channels, generator=torch.Generator().manual_seed(i))) for i in range(2)])

    def flow_loss():
        torch.manual_seed(7)
        return float(model(**batch)["flow_loss"])

    plain = flow_loss()
    model.config.flow.pitch_weight = 4.0
    assert flow_loss() == plain  # no pitch channels yet
    model.config.pitch_channels = 4
    weighted = flow_loss()
    model.config.flow.pitch_weight = 1.0
    assert flow_loss() == plain and weighted > plain
    with pytest.raises(ValueError, match="pitch_weight must be positive"):
        type(model.config)(latent_dim=16, flow=type(model.config.flow)(pitch_weight=0.0))
