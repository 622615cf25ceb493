"""Inference: sampler, CFG batching, KV cache equivalence, per-item finishing, length bounds, streaming."""
import numpy as np
import pytest
import soundfile as sf
import torch

from holitok_slm.infer.euler_sampler import GraphedPatchSampler
from holitok_slm.model.dit_head import sample_patch, sway_timesteps
from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents, stream_patches
from holitok_slm import layout
from holitok_slm.text_tokenizer import PAD
from holitok_slm.tiny import build_tiny_model, randomize_heads, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return randomize_heads(build_tiny_model(TEXTS, tmp_path_factory.mktemp("tok")))


def _requests():
    g = torch.Generator().manual_seed(5)
    return [TTSRequest("the cat sat"),
            TTSRequest("hello world", prompt_latents=torch.randn(10, 16, generator=g), prompt_text="a dog ran"),
            TTSRequest("sat on the mat", instruction="speak slowly")]


def test_sway_timesteps():
    plain = sway_timesteps(10, 0.0)
    assert torch.allclose(plain, torch.linspace(0, 1, 11))
    swayed = sway_timesteps(10, -1.0)
    assert swayed[0] == 0 and torch.isclose(swayed[-1], torch.tensor(1.0))
    assert (swayed.diff() > 0).all()
    assert swayed.diff()[0] < plain.diff()[0]  # negative sway: finer steps near the noise end


def test_batched_cfg_equals_two_separate_head_calls(model):
    g = torch.Generator().manual_seed(0)
    noisy, history = torch.randn(3, 4, 16, generator=g), torch.randn(3, 4, 16, generator=g)
    t, condition = torch.rand(3, generator=g), torch.randn(3, 64, generator=g)
    with torch.no_grad():
        guided = model.dit.guided_velocity(noisy, t, condition, history, cfg_strength=2.0)
        conditional = model.dit(noisy, t, condition, history)
        unconditional = model.dit(noisy, t, torch.zeros_like(condition), history)
    assert not torch.allclose(conditional, unconditional, atol=1e-4)
    assert torch.allclose(guided, conditional + 2.0 * (conditional - unconditional), atol=1e-5)


def test_euler_sampler_follows_a_constant_velocity_field(model):
    class Constant(torch.nn.Module):
        def guided_velocity(self, x, t, condition, history, cfg_strength, text_free_condition=None,
                            text_cfg_strength=0.0, frame_text=None):
            return torch.ones_like(x) * 3.0

    noise = torch.zeros(2, 4, 16)
    out = sample_patch(Constant(), torch.zeros(2, 64), noise, noise, steps=7, sway_coef=-1.0)
    assert torch.allclose(out, torch.full_like(out, 3.0), atol=1e-5)  # integral of v over t in [0, 1]


def test_static_kv_cache_equals_the_growing_one(model):
    options = TTSOptions.from_model(model, max_patches=5, eos_threshold=2.0)
    grown = generate_latents(model, _requests(), options, torch.Generator().manual_seed(2))
    options.static_cache = True
    static = generate_latents(model, _requests(), options, torch.Generator().manual_seed(2))
    for a, b in zip(grown, static):
        assert a.latents.shape == b.latents.shape and torch.allclose(a.latents, b.latents, atol=1e-4)


def test_graphed_sampler_buffers_equal_the_eager_loop_and_refuse_what_cannot_run(model):
    # CPU has no CUDA graphs: capture=False runs the same static-buffer path that a replay reads, call after call.
    torch.manual_seed(3)
    condition, history = torch.randn(2, model.dit.hidden_size), torch.randn(2, 4, model.config.latent_dim)
    sampler = GraphedPatchSampler(model.dit, condition, history, steps=5, cfg_strength=2.0, sway_coef=-1.0,
                                  capture=False)
    for _ in range(2):  # a second call must not see the first call's inputs
        condition, history, noise = torch.randn_like(condition), torch.randn_like(history), torch.randn_like(history)
        expected = sample_patch(model.dit, condition, history, noise, steps=5, cfg_strength=2.0, sway_coef=-1.0)
        assert torch.equal(sampler(condition, history, noise), expected)
    with pytest.raises(ValueError, match="built for"):
        sampler(condition[:1], history[:1], noise[:1])
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedPatchSampler(model.dit, condition, history, 5, 2.0, -1.0, capture=True)
    with pytest.raises(ValueError, match="cuda_graph needs"):
        generate_latents(model, _requests(), TTSOptions.from_model(model, max_patches=2, cuda_graph=True))


@pytest.mark.parametrize("variant", ["patch", "semantic", "patch+progress", "semantic+progress", "patch+pointer",
                                     "patch+pointer_only"])
def test_generation_with_kv_cache_equals_without(tmp_path, variant):
    model = model_for(variant, tmp_path)
    options = TTSOptions.from_model(model, max_patches=6, eos_threshold=2.0)
    cached = generate_latents(model, _requests(), options, torch.Generator().manual_seed(1))
    options.use_cache = False
    recomputed = generate_latents(model, _requests(), options, torch.Generator().manual_seed(1))
    for a, b in zip(cached, recomputed):
        assert a.latents.shape == (6 * 4, 16)
        assert torch.allclose(a.latents, b.latents, atol=1e-5, rtol=0)


def model_for(variant, tmp_path):
    cfg = tiny_config("semantic" if variant.startswith("semantic") else "patch")
    cfg.audio_progress = variant.endswith("+progress")
    cfg.text_pointer = variant.endswith(("+pointer", "+pointer_only"))
    cfg.text_pointer_only = variant.endswith("+pointer_only")
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))
    if model.progress is not None:  # it starts at zero (a no-op): give it something to carry
        torch.nn.init.normal_(model.progress.proj.weight, std=0.5)
    if model.pointer is not None:
        torch.nn.init.normal_(model.pointer.proj.weight, std=0.1)
    return model


def _pointed(step: int, expected: float, length: int) -> int:
    """The text token the pointer reads for audio position `step`: the centre of the next patch, uniformly aligned."""
    return min(int((step + 1.5) / expected * length), length - 1)


def test_text_pointer_reads_the_aligned_text_in_training_and_generation(tmp_path):
    from holitok_slm.infer.tts import _utterance_patches

    model = model_for("patch+pointer", tmp_path).eval()
    tok, width, radius = model.text_tokenizer, model.backbone.hidden_size, model.pointer.radius
    with torch.no_grad():  # make the pointer hand on exactly the embedding of the token it points at
        model.pointer.proj.weight.zero_()
        model.pointer.proj.weight[:, radius * width:(radius + 1) * width] = torch.eye(width)
    table = lambda text: model.backbone.embed(torch.tensor(tok.encode(text)))  # noqa: E731
    gen = torch.Generator().manual_seed(3)
    items = [dict(id="a", task="tts", text="the cat sat", latents=torch.randn(28, 16, generator=gen)),
             dict(id="b", task="asr", text="hello world", latents=torch.randn(12, 16, generator=gen)),
             dict(id="c", task="tts", text="a dog ran", instruction="speak slowly",
                  latents=torch.randn(20, 16, generator=gen))]
    batch = model.collate(items)
    args = [batch[key] for key in ("input_ids", "latents", "frame_mask", "audio_offset", "num_patches")]
    with torch.no_grad():
        with_pointer = model.embed_inputs(*args)
        pointer, model.pointer = model.pointer, None
        without = model.embed_inputs(*args)
        model.pointer = pointer
        for i, item in enumerate(items):  # training: uniform over the item's true length; the instruction is skipped
            offset, n = int(batch["audio_offset"][i]), int(batch["num_patches"][i])
            added = with_pointer[i] - without[i]
            if item["task"] == "asr":
                assert torch.equal(added, torch.zeros_like(added))
                continue
            text = table(item["text"])
            assert torch.equal(added[:offset], torch.zeros_like(added[:offset]))  # text positions untouched
            for k in range(n):
                assert torch.allclose(added[offset + k], text[_pointed(k, n, len(text))], atol=1e-6)
        # generation: the prompt's positions and each generated patch, uniform over the expected utterance
        request = TTSRequest("hello world", prompt_latents=torch.randn(8, 16, generator=gen), prompt_text="a dog ran")
        total = _utterance_patches(model, request, 2)
        seen = []
        handle = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
        try:
            options = TTSOptions.from_model(model, max_patches=4, eos_threshold=2.0)
            patches = [raw for raw, _ in stream_patches(model, [request], options, torch.Generator().manual_seed(0))]
        finally:
            handle.remove()
        joined = table("a dog ran hello world")
        prompt_added = seen[0][0, -2:] - model.embed_prompt(request.prompt_latents)[0][0]
        for k in range(2):
            assert torch.allclose(prompt_added[k], joined[_pointed(k, total, len(joined))], atol=1e-5)
        for k, raw in enumerate(patches[:-1]):
            expected = model.embed_patch(model.normalize_latents(raw))[0] + joined[_pointed(2 + k, total, len(joined))]
            assert torch.allclose(seen[k + 1][0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["patch+progress", "semantic+progress"])
def test_audio_progress_is_the_share_of_the_utterance_in_training_and_generation(tmp_path, variant):
    from holitok_slm.infer.tts import _utterance_patches

    model = model_for(variant, tmp_path).eval()
    gen = torch.Generator().manual_seed(2)
    items = [dict(id="a", task="tts", text="the cat sat", latents=torch.randn(20, 16, generator=gen)),
             dict(id="b", task="asr", text="hello world", latents=torch.randn(12, 16, generator=gen))]
    batch = model.collate(items)
    args = (batch["latents"], batch["frame_mask"], batch["num_patches"])
    with torch.no_grad():
        with_progress = model.embed_audio(*args)
        progress, model.progress = model.progress, None
        without = model.embed_audio(*args)
        model.progress = progress
    for i, n in enumerate(batch["num_patches"].tolist()):  # training: position / the item's own length
        share = torch.arange(n) / n
        assert torch.allclose(with_progress[i, :n] - without[i, :n], model.progress(share), atol=1e-5)
        assert torch.equal(with_progress[i, n:], without[i, n:])  # padding stays zero
    # generation: the prompt's and each generated patch's share of the expected whole utterance
    request = TTSRequest("hello world", prompt_latents=torch.randn(8, 16, generator=gen), prompt_text="a dog ran")
    total = _utterance_patches(model, request, 2)
    assert total == pytest.approx(2 + 2 / len(model.text_tokenizer.encode("a dog ran"))
                                  * len(model.text_tokenizer.encode("hello world")))
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    try:
        options = TTSOptions.from_model(model, max_patches=3, eos_threshold=2.0)
        patches = [raw for raw, _ in stream_patches(model, [request], options, torch.Generator().manual_seed(0))]
    finally:
        handle.remove()
    prompt_share = seen[0][0, -2:] - model_without_progress_prompt(model, request)
    assert torch.allclose(prompt_share, model.progress(torch.arange(2) / total), atol=1e-5)
    if variant == "patch+progress":  # each step reads the patch it made plus its share
        for k, raw in enumerate(patches[:-1]):
            expected = model.embed_patch(model.normalize_latents(raw)) + model.progress(torch.tensor([(2 + k) / total]))
            assert torch.allclose(seen[k + 1][:, 0], expected, atol=1e-5)


def model_without_progress_prompt(model, request):
    """The prompt's last two audio embeddings as a model without audio_progress embeds them."""
    progress, model.progress = model.progress, None
    try:
        with torch.no_grad():
            return model.embed_prompt(request.prompt_latents)[0][0, -2:]
    finally:
        model.progress = progress


def test_per_item_finishing_and_length_caps(model):
    requests = _requests()
    never_stop = TTSOptions.from_model(model, eos_threshold=2.0)
    results = generate_latents(model, requests, never_stop, torch.Generator().manual_seed(0))
    for result in results:
        low, high = result.length_bounds
        assert result.latents.shape[0] == high * 4 and not result.stopped_by_eos
    assert len({r.latents.shape[0] for r in results}) > 1  # items finished at different steps
    # Caps follow the target text length; with a prompt the speaking rate comes from the prompt.
    rate = float(model.patches_per_token)
    tokens = len(model.text_tokenizer.encode("the cat sat"))
    assert results[0].length_bounds == (int(0.3 * rate * tokens), int(np.ceil(2.5 * rate * tokens)) + 4)
    always_stop = TTSOptions.from_model(model, eos_threshold=-1.0)
    for result in generate_latents(model, requests, always_stop, torch.Generator().manual_seed(0)):
        assert result.latents.shape[0] == result.length_bounds[0] * 4 and result.stopped_by_eos


def test_latent_stream_equals_one_shot(model):
    options = TTSOptions.from_model(model, max_patches=5, eos_threshold=2.0)
    one_shot = generate_latents(model, _requests(), options, torch.Generator().manual_seed(2))
    pieces = [[] for _ in range(3)]
    for patch, active in stream_patches(model, _requests(), options, torch.Generator().manual_seed(2)):
        assert patch.shape == (3, 4, 16)
        for i in active.nonzero().flatten().tolist():
            pieces[i].append(patch[i])
    for result, chunks in zip(one_shot, pieces):
        assert torch.equal(result.latents, torch.cat(chunks))


def test_asr_never_emits_the_backbones_padding_rows(model):
    from holitok_slm.infer.asr import transcribe_latents

    known = len(model.text_tokenizer)
    assert model.config.backbone.vocab_size > known  # rounded up to a multiple of 64: rows no tokenizer decodes

    def favour_padding(module, inputs, output):
        return torch.cat([output[..., :known], output[..., known:] + 1e4], -1)

    latents = torch.randn(24, 16, generator=torch.Generator().manual_seed(8))
    hook = model.backbone.lm.lm_head.register_forward_hook(favour_padding)
    try:
        greedy = transcribe_latents(model, [latents], max_new_tokens=4, beam_size=1)
        beams = transcribe_latents(model, [latents], max_new_tokens=4, beam_size=2)
    finally:
        hook.remove()
    assert all(isinstance(text, str) for text in greedy + beams)


def test_bad_tts_inputs(model):
    with pytest.raises(ValueError, match="empty"):
        generate_latents(model, [TTSRequest("   ")])
    with pytest.raises(ValueError, match="shorter than one patch"):
        generate_latents(model, [TTSRequest("hi", prompt_latents=torch.randn(3, 16), prompt_text="a")])
    with pytest.raises(ValueError, match="NaN"):
        generate_latents(model, [TTSRequest("hi", prompt_latents=torch.full((8, 16), float("inf")), prompt_text="a")])
    with pytest.raises(TypeError, match="unknown TTS options"):
        TTSOptions.from_model(model, stepz=3)


@pytest.mark.slow
def test_audio_pipeline_streaming_equals_one_shot_and_accepts_any_rate(model, tmp_path):
    from holitok import HoliTok, get_preset_config
    from holitok_slm.infer.pipeline import SpeechPipeline

    torch.manual_seed(0)
    pipeline = SpeechPipeline(model, HoliTok(get_preset_config("tiny")))
    prompt = 0.1 * np.sin(np.linspace(0, 400, 16000 * 2)).astype(np.float32)  # 2 s at 16 kHz
    path = tmp_path / "prompt.wav"
    sf.write(path, np.stack([prompt, prompt], 1), 16000)  # stereo file at 16 kHz
    kwargs = dict(prompt_audio=str(path), prompt_text="a dog ran", seed=4, max_patches=3, eos_threshold=2.0)
    one_shot = pipeline.tts("hello world", **kwargs)
    chunks = list(pipeline.tts_stream("hello world", chunk_patches=1, **kwargs))
    assert one_shot.shape == (3 * 4 * 1920,)
    assert len(chunks) >= 3
    assert torch.allclose(torch.cat(chunks), one_shot, atol=1e-5)
    text = pipeline.asr(prompt, sample_rate=16000, max_new_tokens=3)
    assert isinstance(text, str)
    with pytest.raises(ValueError):
        pipeline.asr(np.zeros(0, dtype=np.float32), sample_rate=16000)


def test_prompt_trailing_silence_is_cut_before_encoding(model):
    """`prompt_trailing_silence_db`: a prompt's trailing silence is cut (40 ms kept) before it becomes latents, and
    the decoder context (the prompt's latents) shrinks with it; None keeps the prompt whole."""
    from holitok import HoliTok, get_preset_config
    from holitok_slm.infer.inputs import trim_trailing_silence
    from holitok_slm.infer.pipeline import SpeechPipeline

    rate = 48000
    speech = 0.3 * torch.sin(torch.linspace(0, 3000, rate))  # 1 s
    wav = torch.cat([speech, 1e-4 * torch.ones(rate // 2)])  # then 0.5 s at -70 dB under it
    assert trim_trailing_silence(wav, rate, -40).numel() == rate + round(0.04 * rate)
    assert trim_trailing_silence(wav, rate, -90).numel() == wav.numel()  # the quiet tail is above -90 dB
    assert torch.equal(trim_trailing_silence(torch.zeros(rate), rate, -40), torch.zeros(rate))

    torch.manual_seed(0)
    pipeline = SpeechPipeline(model, HoliTok(get_preset_config("tiny")))
    whole, _ = pipeline._requests(["hello"], [wav.numpy()], ["a dog ran"], [None], rate,
                                  TTSOptions.from_model(model))
    cut, _ = pipeline._requests(["hello"], [wav.numpy()], ["a dog ran"], [None], rate,
                                TTSOptions.from_model(model, prompt_trailing_silence_db=-40.0))
    patch = model.config.patch_size  # whole patches of 40 ms latent frames
    assert whole[0].prompt_latents.shape[0] == 38 // patch * patch  # 1.5 s: 38 frames (the last one partial)
    assert cut[0].prompt_latents.shape[0] == 26 // patch * patch    # 1.04 s: 26 frames
    with pytest.raises(ValueError):
        TTSOptions.from_model(model, prompt_trailing_silence_db=float("nan"))


def test_text_guidance_combines_three_branches_and_runs_the_text_free_sequence_alongside(model, tmp_path):
    from holitok_slm.infer.inputs import InputError

    g = torch.Generator().manual_seed(4)
    x, history = torch.randn(3, 4, 16, generator=g), torch.randn(3, 4, 16, generator=g)
    t, condition, free = torch.rand(3, generator=g), torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    with torch.no_grad():
        v = {name: model.dit(x, t, c, history) for name, c in
             (("c", condition), ("u", torch.zeros_like(condition)), ("t", free))}
        guided = model.dit.guided_velocity(x, t, condition, history, 2.0, free, 1.5)
        only_text = model.dit.guided_velocity(x, t, condition, history, 0.0, free, 1.5)
    assert torch.allclose(guided, v["c"] + 2.0 * (v["c"] - v["u"]) + 1.5 * (v["c"] - v["t"]), atol=1e-5)
    assert torch.allclose(only_text, v["c"] + 1.5 * (v["c"] - v["t"]), atol=1e-5)
    with pytest.raises(ValueError, match="text-free"):
        model.dit.guided_velocity(x, t, condition, history, 2.0, None, 1.5)
    # generation: the text-free sequences ride in the same batch; the KV cache still equals recomputation
    options = TTSOptions.from_model(model, max_patches=4, eos_threshold=2.0, text_cfg_strength=1.5)
    cached = generate_latents(model, _requests(), options, torch.Generator().manual_seed(1))
    options.use_cache = False
    recomputed = generate_latents(model, _requests(), options, torch.Generator().manual_seed(1))
    plain = generate_latents(model, _requests(), TTSOptions.from_model(model, max_patches=4, eos_threshold=2.0),
                             torch.Generator().manual_seed(1))
    for a, b, c in zip(cached, recomputed, plain):
        assert torch.allclose(a.latents, b.latents, atol=1e-5, rtol=0)
        assert not torch.allclose(a.latents, c.latents)  # the guidance changed what was spoken
    with pytest.raises(InputError, match="text_cfg_strength"):
        TTSOptions.from_model(model, text_cfg_strength=-1.0)
    with pytest.raises(InputError, match="patch input path"):
        generate_latents(model_for("semantic", tmp_path), _requests(),
                         TTSOptions.from_model(model, max_patches=2, text_cfg_strength=1.0))


def test_text_pointer_takes_part_in_a_batch_without_tts_text(tmp_path):
    """Distributed training reduces every parameter's gradient each step: an ASR-only batch must still use the
    pointer (a zero contribution), or the ranks' collectives stop matching."""
    model = model_for("patch+pointer", tmp_path).train()
    gen = torch.Generator().manual_seed(4)
    batch = model.collate([dict(id="b", task="asr", text="hello world", latents=torch.randn(12, 16, generator=gen))])
    model(batch)["loss"].backward()
    assert model.pointer.proj.weight.grad is not None


@pytest.mark.parametrize("pointer_only", [False, True])
def test_text_pointer_only_hides_the_words_from_everything_but_the_pointer(tmp_path, pointer_only):
    model = model_for("patch+pointer_only" if pointer_only else "patch+pointer", tmp_path).eval()
    tok = model.text_tokenizer
    texts = ("the cat sat", "a dog ran")
    assert len(tok.encode(texts[0])) == len(tok.encode(texts[1]))  # same positions, different words
    latents = torch.randn(20, 16, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        model.pointer.proj.weight.zero_()  # the pointer adds nothing: what is left of the words is the prefix's
        states = []
        for text in texts:
            batch = model.collate([dict(id="a", task="tts", text=text, latents=latents)])
            hidden = model.hidden_states(*[batch[key] for key in ("input_ids", "attention_mask", "latents",
                                                                  "frame_mask", "audio_offset", "num_patches")])
            states.append(hidden[0, int(batch["audio_offset"][0]):])
        # generation's prefix hides them the same way
        prefix = layout.tts_prefix(model, layout.tts_request_layout(tok, model.config, texts[0]))
        pad = model.backbone.embed(torch.tensor([tok.id(PAD)]))[0]
        text_rows = prefix.embeds[1:1 + len(tok.encode(texts[0]))]
    assert torch.allclose(states[0], states[1], atol=1e-6) == pointer_only
    assert torch.allclose(text_rows, pad.expand_as(text_rows)) == pointer_only
