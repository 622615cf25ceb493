"""model.frame_pointer: the flow head reads each frame's text, the same way in training and in TTS."""
import pytest
import torch

from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents, stream_patches
from holitok_slm.model.text_pointer import frame_points
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.tiny import build_tiny_model, randomize_heads, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def frame_model(tmp_path, frame_pointer=True, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_config("patch")
    cfg.text_pointer, cfg.text_pointer_alignment, cfg.frame_pointer = True, "forced", frame_pointer
    cfg.flow.history_dropout, cfg.flow.blind_history_share, cfg.generation.blind_history = 1.0, 1.0, True
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))
    with torch.no_grad():
        torch.nn.init.normal_(model.pointer.proj.weight, std=0.1)
    return model


def test_frame_points_run_piecewise_linear_through_the_patch_centres():
    before, centre, after = torch.tensor([1.0, 0.0]), torch.tensor([2.0, 0.0]), torch.tensor([4.0, 0.5])
    # patch of 4: its centre is frame 2; frames 0-1 lie between the centres before and of the patch
    assert torch.allclose(frame_points(before, centre, after, 4),
                          torch.tensor([[1.5, 1.75, 2.0, 2.5], [0.0, 0.0, 0.0, 0.125]]))
    assert torch.allclose(frame_points(before, centre, after, 1), centre[:, None])  # one frame: its centre
    assert torch.allclose(frame_points(before, centre, after, 2), torch.tensor([[1.5, 2.0], [0.0, 0.0]]))


def test_a_frame_pointer_needs_a_forced_pointer_and_starts_as_the_model_without_it(tmp_path):
    cfg = tiny_config("patch")
    cfg.text_pointer, cfg.frame_pointer = True, True
    with pytest.raises(ValueError, match="frame_pointer.*forced"):
        UnifiedModel.from_config(cfg, build_tiny_model(TEXTS, tmp_path / "t", tiny_config("patch")).text_tokenizer)
    plain, framed = frame_model(tmp_path / "a", frame_pointer=False), frame_model(tmp_path / "b")
    missing, unexpected = framed.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["frame_pointer.proj.bias", "frame_pointer.proj.weight"] and not unexpected
    request = TTSRequest("hello world", prompt_latents=torch.randn(16, 16, generator=torch.Generator().manual_seed(1)),
                         text_points=torch.tensor([0.2, 0.9, 1.7, 2.4, 3.1, 3.3]), prompt_text="a dog ran")
    options = TTSOptions.from_model(plain, max_patches=4, eos_threshold=2.0)
    one, two = (generate_latents(m, [request], options, torch.Generator().manual_seed(0))[0].latents
                for m in (plain, framed))
    assert torch.allclose(one, two, atol=1e-6)  # zero-initialised: a warm start computes what it did before


def _oracle_request():
    gen = torch.Generator().manual_seed(2)
    oracle = torch.tensor([0.2, 0.9, 1.7, 2.4, 3.1, 3.3, 4.0, 4.6])
    return TTSRequest("hello world", prompt_latents=torch.randn(16, 16, generator=gen), prompt_text="a dog ran",
                      text_points=oracle), oracle


def test_tts_reads_each_frame_s_text_as_training_does_for_the_same_alignment(tmp_path):
    model = frame_model(tmp_path)
    with torch.no_grad():
        torch.nn.init.normal_(model.frame_pointer.proj.weight, std=0.1)
    request, oracle = _oracle_request()
    used = []
    hook = model.frame_pointer.register_forward_hook(lambda module, inputs, out: used.append(out.detach()))
    try:
        patches = [raw for raw, _ in stream_patches(model, [request], TTSOptions.from_model(
            model, max_patches=4, eos_threshold=2.0), torch.Generator().manual_seed(0))]
    finally:
        hook.remove()
    assert len(used) == len(patches) == 4
    # the same utterance as a training item whose audio positions carry the same points
    item = dict(id="u", task="tts", text="a dog ran hello world", latents=torch.randn(32, 16))
    batch = model.collate([item])
    trained = model.flow_frame_text(batch["input_ids"], batch["audio_offset"], batch["num_patches"], batch["is_tts"],
                                    oracle[None], batch["latents"].shape[1])
    assert trained.shape == (8, 4, model.config.dit.hidden_size)
    for k, frame_text in enumerate(used):  # generated patch k is the utterance's patch 4 + k
        assert torch.allclose(frame_text[0], trained[4 + k], atol=1e-5)
    # and what the flow head reads changes what it draws
    with torch.no_grad():
        model.frame_pointer.proj.weight.zero_()
        model.frame_pointer.proj.bias.zero_()
    blank = [raw for raw, _ in stream_patches(model, [request], TTSOptions.from_model(
        model, max_patches=4, eos_threshold=2.0), torch.Generator().manual_seed(0))]
    assert not torch.allclose(torch.cat(patches), torch.cat(blank))


def test_training_trains_the_frame_pointer_and_needs_the_alignment(tmp_path):
    model = frame_model(tmp_path)
    gen = torch.Generator().manual_seed(3)
    items = [dict(id="a", task="tts", text="the cat sat", latents=torch.randn(28, 16, generator=gen),
                  text_points=torch.linspace(0, 3.5, 28)),
             dict(id="b", task="asr", text="hello world", latents=torch.randn(12, 16, generator=gen))]
    model.train()
    out = model(**model.collate(items))
    out["loss"].backward()
    assert model.frame_pointer.proj.weight.grad.abs().sum() > 0
    batch = model.collate(items)
    with pytest.raises(ValueError, match="frame_pointer needs the batch's text_points"):
        model.flow_frame_text(batch["input_ids"], batch["audio_offset"], batch["num_patches"], batch["is_tts"], None,
                              batch["latents"].shape[1])


def test_guidance_s_unconditional_branch_drops_the_frame_text_with_the_condition(tmp_path):
    dit = frame_model(tmp_path).dit
    gen = torch.Generator().manual_seed(4)
    noisy, history = torch.randn(3, 4, 16, generator=gen), torch.randn(3, 4, 16, generator=gen)
    condition, frame_text = torch.randn(3, 64, generator=gen), torch.randn(3, 4, 64, generator=gen)
    t = torch.rand(3, generator=gen)
    with torch.no_grad():
        guided = dit.guided_velocity(noisy, t, condition, history, 2.0, frame_text=frame_text)
        conditional = dit(noisy, t, condition, history, frame_text)
        unconditional = dit(noisy, t, torch.zeros_like(condition), history)
        assert not torch.allclose(conditional, dit(noisy, t, condition, history), atol=1e-4)
    assert torch.allclose(guided, conditional + 2.0 * (conditional - unconditional), atol=1e-5)


def test_the_graph_sampler_s_buffers_carry_the_frame_text(tmp_path):
    from holitok_slm.infer.euler_sampler import GraphedPatchSampler
    from holitok_slm.model.dit_head import sample_patch

    dit = frame_model(tmp_path).dit
    gen = torch.Generator().manual_seed(6)
    condition, history = torch.randn(2, 64, generator=gen), torch.randn(2, 4, 16, generator=gen)
    noise, frame_text = torch.randn(2, 4, 16, generator=gen), torch.randn(2, 4, 64, generator=gen)
    sampler = GraphedPatchSampler(dit, condition, history, 5, 2.0, -1.0, capture=False, frame_text=frame_text)
    expected = sample_patch(dit, condition, history, noise, 5, 2.0, -1.0, frame_text=frame_text)
    assert torch.allclose(sampler(condition, history, noise, frame_text), expected, atol=1e-6)
    with pytest.raises(ValueError, match="built for frame_text"):
        sampler(condition, history, noise)
