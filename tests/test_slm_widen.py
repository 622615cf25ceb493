"""holitok_slm/widen.py: a unified model (and its aligner) widened to more latent channels reads and writes the old
channels exactly as before; train.trainable_prefixes freezes the rest."""
from __future__ import annotations

import pytest
import torch

from holitok_slm.model.ctc_aligner import CTCAligner, CTCAlignerConfig
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
