"""The three training stages on the tiny configs: what trains, which loss terms exist, and what gets exported."""

from pathlib import Path

import pytest
import torch

from holitok import HoliTok, SemanticModule
from holitok.train.config import load_config
from holitok.train.toy_assets import save_tiny_teachers, write_clips
from holitok.train.train_model import BOTTLENECK_MODULES, DECODER_SIDE_MODULES

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok_train_assets")
    manifest = write_clips(root / "clips", count=2, seconds=0.8)
    wavlm, xvector = save_tiny_teachers(root / "teachers")
    return {"manifest": manifest, "wavlm": wavlm, "xvector": xvector}


def tiny_config(stage, assets, output_dir, *overrides, init_from=None):
    items = [f"data.train={assets['manifest']}", f"output_dir={output_dir}", f"init_from={init_from or 'null'}",
             "train.progress_bar=false", "train.save_every=1000", "train.sample_every=1000"]
    if stage == 3:
        items += [f"distill.wavlm_path={assets['wavlm']}", f"distill.xvector_path={assets['xvector']}"]
    return load_config(CONFIGS / f"tiny_stage{stage}.yaml", items + list(overrides))


@pytest.fixture
def make_trainer():
    from accelerate.state import AcceleratorState

    from holitok.train.trainer import StageTrainer

    yield StageTrainer
    AcceleratorState._reset_state(reset_partial_state=True)


def first_batch(trainer):
    return next(iter(trainer.loader))


def test_stage1_is_a_deterministic_autoencoder_without_kl(assets, tmp_path, make_trainer):
    trainer = make_trainer(tiny_config(1, assets, tmp_path / "s1"))
    model = trainer.unwrapped
    assert model.flow is None
    batch = first_batch(trainer)
    with torch.no_grad():
        first = model(batch["audio"], batch["lengths"])
        second = model(batch["audio"], batch["lengths"])
    assert first.losses == {}  # no KL (nor any other latent-side term) in Stage I
    assert torch.equal(first.audio, second.audio)  # z = posterior mean: no sampling anywhere
    logs = trainer.train_step(batch)
    assert {"mel", "adv", "fm", "discriminator"} <= set(logs) and "kl" not in logs
    with pytest.raises(ValueError, match="no KL term"):
        tiny_config(1, assets, tmp_path / "bad", "loss_weights.kl=0.01")


def test_stage2_changes_only_bottleneck_parameters(assets, tmp_path, make_trainer):
    trainer = make_trainer(tiny_config(2, assets, tmp_path / "s2", "optim.lr=0.01"))
    holitok = trainer.unwrapped.holitok
    before = {k: v.detach().clone() for k, v in holitok.state_dict().items()}
    flow_before = [p.detach().clone() for p in trainer.unwrapped.flow.parameters()]
    batches = iter(trainer._batches())
    for _ in range(3):
        logs = trainer.train_step(next(batches))
        assert "kl" in logs
    after = holitok.state_dict()
    frozen = [k for k in before if k.startswith(("audio_encoder.", "decoder."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    for module in BOTTLENECK_MODULES:
        keys = [k for k in before if k.startswith(module + ".")]
        assert any(not torch.equal(before[k], after[k]) for k in keys), f"{module} did not train"
    assert any(not torch.equal(a, b) for a, b in zip(flow_before, trainer.unwrapped.flow.parameters()))


def test_stage2_decoder_only_keeps_the_latents_bit_identical(assets, tmp_path, make_trainer):
    trainer = make_trainer(tiny_config(2, assets, tmp_path / "s2d", "optim.lr=0.01", "stage_options.decoder_only=true",
                                       "stage_options.init_log_std=null", "train.adversarial_start_step=0"))
    holitok = trainer.unwrapped.holitok
    before = {k: v.detach().clone() for k, v in holitok.state_dict().items()}
    batches = iter(trainer._batches())
    batch = first = next(batches)
    with torch.no_grad():
        latents_before = holitok.encode(first["audio"], sample=False)
    for _ in range(2):
        logs = trainer.train_step(batch)
        assert "adv" in logs
        batch = next(batches)
    after = holitok.state_dict()
    encoder_side = [k for k in before if k.startswith(("audio_encoder.", "enc_mi_layer.", "pre_proj."))]
    assert encoder_side and all(torch.equal(before[k], after[k]) for k in encoder_side)
    for module in DECODER_SIDE_MODULES:
        keys = [k for k in before if k.startswith(module + ".")]
        assert any(not torch.equal(before[k], after[k]) for k in keys), f"{module} did not train"
    with torch.no_grad():
        assert torch.equal(holitok.encode(first["audio"], sample=False), latents_before)
    with pytest.raises(ValueError, match="stage 2 only"):
        from holitok.train.train_model import TokenizerTrainModel

        TokenizerTrainModel(tiny_config(1, assets, tmp_path / "bad", "stage_options.decoder_only=true"))


def test_stage2_train_all_is_a_vae_fine_tune_of_every_part(assets, tmp_path, make_trainer):
    trainer = make_trainer(tiny_config(2, assets, tmp_path / "s2a", "optim.lr=0.01", "stage_options.train_all=true"))
    holitok = trainer.unwrapped.holitok
    before = {k: v.detach().clone() for k, v in holitok.state_dict().items()}
    batches = iter(trainer._batches())
    for _ in range(2):
        logs = trainer.train_step(next(batches))
        assert "kl" in logs
    after = holitok.state_dict()
    for module in ("audio_encoder", "decoder", *BOTTLENECK_MODULES):
        keys = [k for k in before if k.startswith(module + ".")]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys), f"{module} did not train"
    from holitok.train.train_model import TokenizerTrainModel

    with pytest.raises(ValueError, match="exclude each other"):
        TokenizerTrainModel(tiny_config(2, assets, tmp_path / "bad", "stage_options.train_all=true",
                                        "stage_options.decoder_only=true"))
    with pytest.raises(ValueError, match="stage 2 only"):
        TokenizerTrainModel(tiny_config(1, assets, tmp_path / "bad1", "stage_options.train_all=true"))


@pytest.mark.slow
def test_stage3_has_every_loss_term_and_exports_runtime_checkpoints(assets, tmp_path, make_trainer):
    config = tiny_config(3, assets, tmp_path / "s3", "train.max_steps=1")
    trainer = make_trainer(config)
    logs = trainer.train_step(first_batch(trainer))
    assert {"mel", "adv", "fm", "kl", "wavlm", "xvector", "ce", "discriminator"} <= set(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())

    result = trainer.run()
    clip = torch.from_numpy(__import__("soundfile").read(assets["manifest"].parent / "clip0.wav",
                                                        dtype="float32")[0])[None, None]
    expected = trainer.reconstruct(clip)
    for source in (result.final_dir / "holitok", result.final_dir / "runtime",
                   result.final_dir / "runtime" / "model.pt"):
        reloaded = HoliTok.from_pretrained(source, device="cpu")
        got = reloaded.decode(reloaded.encode(clip, sample=False))
        assert torch.allclose(got, expected, atol=1e-5), source
    runtime = torch.load(result.final_dir / "runtime" / "model.pt", weights_only=True)["model"]
    assert not [k for k in runtime if k.startswith(("flow", "supervision", "frame_head", "utterance_head"))]
    assert set(runtime) == set(HoliTok(trainer.unwrapped.holitok.config).state_dict())
    semantic = trainer.unwrapped.supervision.semantic
    latents = torch.randn(1, 6, semantic.config.input_dim)
    for loaded in (SemanticModule.from_pretrained(result.final_dir / "semantic"),
                   SemanticModule.from_pretrained(result.final_dir / "runtime" / "semantic.pt",
                                                  num_heads=semantic.config.num_heads)):
        assert torch.allclose(loaded(latents), semantic(latents), atol=1e-6)


def test_stage3_without_distillation_needs_no_teachers_and_decodes_a_crop(assets, tmp_path, make_trainer):
    """The paper's 'w/o distill' Stage III (configs/tokenizer/demo_stage3.yaml): no teacher is loaded, the text
    cross-entropy still trains, and with a decode crop the mel loss compares a window of the reconstruction with the
    same window of the input."""
    from holitok.train.train_model import TokenizerTrainModel

    no_teachers = [f"data.train={assets['manifest']}", f"output_dir={tmp_path / 's3'}", "init_from=null",
                   "train.progress_bar=false", "loss_weights.wavlm=0", "loss_weights.xvector=0"]
    with pytest.raises(ValueError, match="distill.wavlm_path"):
        load_config(CONFIGS / "tiny_stage3.yaml", no_teachers + ["loss_weights.wavlm=1", "distill.wavlm_path=null"])
    config = load_config(CONFIGS / "tiny_stage3.yaml", no_teachers + ["stage_options.decode_crop_seconds=0.2"])
    trainer = make_trainer(config)
    model = trainer.unwrapped
    assert trainer.teachers is None and not hasattr(model, "frame_head")
    batch = first_batch(trainer)
    hop, crop = model.holitok.hop_size, model.decode_crop_frames
    assert crop * hop < batch["audio"].shape[-1]  # the crop is shorter than the clips
    output = model(batch["audio"], batch["lengths"], None, model.supervision.choose_targets(batch["labels"]))
    assert output.audio.shape[-1] == output.target.shape[-1] == crop * hop
    for row in range(batch["audio"].shape[0]):  # each target is the input at a frame-aligned offset
        source, piece = batch["audio"][row, 0], output.target[row, 0]
        starts = [s for s in range(0, source.shape[-1] - piece.shape[-1] + 1, hop)
                  if torch.equal(source[s:s + piece.shape[-1]], piece)]
        assert starts, row
    logs = trainer.train_step(batch)
    assert {"mel", "kl", "ce"} <= set(logs) and not {"wavlm", "xvector"} & set(logs)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values())
    with pytest.raises(ValueError, match="not stage 1"):
        TokenizerTrainModel(tiny_config(1, assets, tmp_path / "bad", "stage_options.decode_crop_seconds=0.2"))
    with pytest.raises(ValueError, match="needs decode_crop_seconds"):
        TokenizerTrainModel(tiny_config(2, assets, tmp_path / "bad", "stage_options.decode_context_seconds=0.2"))
    # a decoder-only Stage II with the crop and its context: the losses see the window only
    warm = make_trainer(tiny_config(2, assets, tmp_path / "warm", "stage_options.decoder_only=true",
                                    "stage_options.decode_crop_seconds=0.2",
                                    "stage_options.decode_context_seconds=0.2"))
    model = warm.unwrapped
    assert model.decode_context_frames == model.decode_crop_frames > 0
    batch = first_batch(warm)
    output = model(batch["audio"], batch["lengths"])
    assert output.audio.shape[-1] == output.target.shape[-1] == model.decode_crop_frames * hop
    logs = warm.train_step(batch)
    assert torch.isfinite(torch.tensor(logs["mel"]))


def test_a_decode_crop_keeps_its_context_and_the_loss_window_is_the_crop():
    from holitok.train.train_model import crop_for_decoding, loss_window

    torch.manual_seed(0)
    hop, frames, context = 3, 4, 6
    lengths = torch.tensor([20, 12, 3])
    z = torch.randn(3, 2, 20)
    audio = z[:, :1].repeat_interleave(hop, -1)  # frame t's audio is its first latent channel, hop times
    for _ in range(5):
        windows, valid, target, offsets = crop_for_decoding(z, lengths, audio, frames, hop, context)
        assert windows.shape == (3, 2, context + frames)
        keeps = lengths.clamp(max=frames)
        assert torch.equal(valid, offsets + keeps) and bool((offsets <= context).all())
        decoded = windows[:, :1].repeat_interleave(hop, -1)  # a stand-in decoder that reproduces its input frames
        cut = loss_window(decoded, offsets, frames, hop)
        for row in range(3):  # the window under the loss is the target's stretch, the context precedes it
            n = int(keeps[row]) * hop
            assert torch.equal(cut[row, :, :n], target[row, :, :n])
        plain = crop_for_decoding(z, lengths, audio, frames, hop)
        assert plain[0].shape[-1] == frames and not bool(plain[3].any())  # no context: the window alone


def test_a_later_stage_refuses_to_resume_onto_a_retrained_earlier_stage(assets, tmp_path, make_trainer):
    """Raising Stage I's max_steps and rerunning the chain must not resume Stage II on the old Stage I weights."""
    from accelerate.state import AcceleratorState

    def run(stage, steps, **kw):
        trainer = make_trainer(tiny_config(stage, assets, tmp_path / f"s{stage}", f"train.max_steps={steps}", **kw))
        trainer.run()
        AcceleratorState._reset_state(reset_partial_state=True)

    run(1, 1)
    run(2, 1, init_from=str(tmp_path / "s1"))
    run(2, 2, init_from=str(tmp_path / "s1"))      # same Stage I: resuming is fine
    run(1, 2)                                       # Stage I trained further: its export changed
    with pytest.raises(RuntimeError, match="mix two runs"):
        make_trainer(tiny_config(2, assets, tmp_path / "s2", "train.max_steps=3", init_from=str(tmp_path / "s1")))


def test_nonfinite_loss_skips_the_step_and_a_run_of_them_stops_with_a_checkpoint(assets, tmp_path, make_trainer):
    """The policy both trainers share (holitok/train/run_state.py): skip, count, stop after N in a row."""
    from accelerate.state import AcceleratorState

    from holitok.train.run_state import EXIT_NONFINITE, list_checkpoints, read_trainer_state

    trainer = make_trainer(tiny_config(1, assets, tmp_path / "once", "train.max_steps=3",
                                       "train.inject_nonfinite_at_steps=[2]"))
    before = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    batches = trainer._batches()
    trainer.train_step(next(batches))
    after_first = {k: v.clone() for k, v in trainer.unwrapped.state_dict().items()}
    logs = trainer.train_step(next(batches))  # step 2: poisoned
    assert logs["skipped_nonfinite"] == 1.0 and "grad_norm_generator" not in logs
    assert any(not torch.equal(before[k], after_first[k]) for k in before)  # step 1 did update
    assert all(torch.equal(after_first[k], v) for k, v in trainer.unwrapped.state_dict().items())  # step 2 did not
    AcceleratorState._reset_state(reset_partial_state=True)

    trainer = make_trainer(tiny_config(1, assets, tmp_path / "stop", "train.max_steps=10",
                                       "train.inject_nonfinite_at_steps=[2,3]", "train.max_consecutive_nonfinite=2"))
    result = trainer.run()
    assert result.exit_code == EXIT_NONFINITE and result.step == 3
    [checkpoint] = list_checkpoints(tmp_path / "stop")
    assert checkpoint.name == "step-00000003"
    assert read_trainer_state(checkpoint)["counters"] == {"nonfinite_steps": 2, "consecutive_nonfinite": 2}
    assert not (tmp_path / "stop" / "final").exists()  # a broken stage hands nothing over


def test_a_warm_decoder_only_step_after_stage3_keeps_the_latents(assets, tmp_path, make_trainer):
    """The supervised preset's fourth tokenizer step: a stage-2 decoder-only config started from a Stage III run."""
    from accelerate.state import AcceleratorState

    no_teachers = ["loss_weights.wavlm=0", "loss_weights.xvector=0", "train.max_steps=1"]
    third = make_trainer(tiny_config(3, assets, tmp_path / "s3", *no_teachers)).run()
    AcceleratorState._reset_state(reset_partial_state=True)
    trainer = make_trainer(tiny_config(2, assets, tmp_path / "s4", "train.max_steps=2",
                                       "stage_options.decoder_only=true",
                                       "stage_options.init_log_std=null", "data.segment_seconds=null",
                                       "stage_options.decode_crop_seconds=0.2",
                                       "stage_options.decode_context_seconds=0.4", init_from=str(tmp_path / "s3")))
    fourth = trainer.run()
    clip = torch.from_numpy(__import__("soundfile").read(assets["manifest"].parent / "clip0.wav",
                                                        dtype="float32")[0])[None, None]
    before = HoliTok.from_pretrained(third.final_dir / "holitok", device="cpu")
    after = HoliTok.from_pretrained(fourth.final_dir / "holitok", device="cpu")
    assert torch.equal(before.encode(clip), after.encode(clip))  # what the unified model reads is unchanged
    assert not torch.equal(before.decode(before.encode(clip)), after.decode(after.encode(clip)))  # the decoder trained
