"""Blind history: the backbone reads TTS audio only up to a point (training) or its prompt (generation)."""
import torch

from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents
from holitok_slm.tiny import build_tiny_model, randomize_heads, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def blind_model(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config("patch")
    cfg.flow.blind_history_share = 1.0
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))
    model.latent_bias.fill_(0.3)  # the zero patch is latent_bias in raw units
    return model


def test_training_blinds_a_suffix_of_each_tts_item_for_the_backbone_not_the_flow_head(tmp_path):
    model = blind_model(tmp_path)
    g = torch.Generator().manual_seed(0)
    items = [dict(id="t0", task="tts", text="the cat sat on the mat", latents=torch.randn(40, 16, generator=g)),
             dict(id="a0", task="asr", text="the cat sat", latents=torch.randn(24, 16, generator=g))]
    batch = model.collate(items)
    tts, asr = int(batch["is_tts"].nonzero()[0, 0]), int((~batch["is_tts"]).nonzero()[0, 0])
    read = model.blinded_tts_inputs(batch["latents"], batch["num_patches"], batch["is_tts"], g)
    frames = int(batch["frame_mask"][tts].sum())
    blind = (read[tts, :frames] == model.latent_bias).all(-1)
    first = int(blind.nonzero()[0, 0])
    patch = model.config.patch_size
    assert first % patch == 0 and 0.15 * frames - patch <= first <= 0.6 * frames and bool(blind[first:].all())
    assert torch.equal(read[tts, :first], batch["latents"][tts, :first])
    assert torch.equal(read[asr], batch["latents"][asr]) and torch.equal(read[tts, frames:], batch["latents"][tts, frames:])
    assert float(model.normalize_latents(read[tts, first:frames]).abs().max()) == 0.0
    # in a training step the backbone's patch encoder reads zero patches, the flow head's history stays the truth
    encoded, histories = [], []
    hook = model.patch_encoder.register_forward_pre_hook(lambda m, args: encoded.append(args[0].detach().clone()))
    original = model.dit.flow_matching_errors
    model.dit.flow_matching_errors = lambda target, condition, history, *a: (histories.append(history.detach()),
                                                                             original(target, condition, history, *a))[1]
    try:
        model.train()
        model(**batch)
    finally:
        hook.remove()
        del model.dit.flow_matching_errors
    zero_patches = int((encoded[-1].abs().flatten(1).amax(1) == 0).sum())
    assert zero_patches >= 0.4 * frames / patch
    _, _, true_history, _ = model.flow_inputs(model.hidden_states(*(batch[k] for k in (
        "input_ids", "attention_mask", "latents", "frame_mask", "audio_offset", "num_patches"))),
        batch["latents"], batch["frame_mask"], batch["audio_offset"], batch["num_patches"], batch["is_tts"])
    assert torch.equal(histories[-1], true_history)


def test_blind_generation_does_not_read_its_own_patches_and_caches_exactly(tmp_path):
    model = blind_model(tmp_path).eval()
    g = torch.Generator().manual_seed(5)
    requests = [TTSRequest("the cat sat", prompt_latents=torch.randn(16, 16, generator=g))]
    options = TTSOptions.from_model(model, max_patches=6, eos_threshold=2.0, blind_history=True)
    seen = []
    hook = model.patch_encoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        one = generate_latents(model, requests, options, torch.Generator().manual_seed(1))[0]
        two = generate_latents(model, requests, options, torch.Generator().manual_seed(2))[0]
    finally:
        hook.remove()
    assert not torch.allclose(one.latents, two.latents)          # different draws...
    steps = [x for x in seen if x.shape[0] == 1 and x.shape[1] == model.config.patch_size]
    assert steps and all(float(x.abs().max()) == 0 for x in steps)  # ...the backbone read none of them
    options.use_cache = False
    recomputed = generate_latents(model, requests, options, torch.Generator().manual_seed(1))[0]
    assert torch.allclose(one.latents, recomputed.latents, atol=1e-5)
    sighted = generate_latents(model, requests, TTSOptions.from_model(model, max_patches=6, eos_threshold=2.0),
                               torch.Generator().manual_seed(1))[0]
    assert not torch.allclose(one.latents[model.config.patch_size:], sighted.latents[model.config.patch_size:])


def test_a_flow_head_without_history_draws_each_patch_from_the_text_and_prompt_alone(tmp_path):
    # flow.history_dropout 1 + blind generation: nothing drawn depends on an earlier draw, so changing the first
    # patch's noise changes the first patch only (no exposure to the model's own samples at all).
    model = blind_model(tmp_path)
    model.config.flow.history_dropout = 1.0
    model.eval()
    assert not model.flow_reads_history
    histories = []
    hook = model.dit.register_forward_pre_hook(lambda m, args: histories.append(args[3].detach().clone()))
    g = torch.Generator().manual_seed(5)
    requests = [TTSRequest("the cat sat", prompt_latents=torch.randn(16, 16, generator=g))]
    options = TTSOptions.from_model(model, max_patches=6, eos_threshold=2.0, blind_history=True)
    try:
        one = generate_latents(model, requests, options, torch.Generator().manual_seed(1))[0].latents
    finally:
        hook.remove()
    assert histories and all(float(h.abs().max()) == 0 for h in histories)
    patch, first_noise = model.config.patch_size, []
    original = torch.randn

    def shifted_first_draw(*args, **kwargs):  # the sampler's first noise draw, and only it, is changed
        out = original(*args, **kwargs)
        if not first_noise:
            first_noise.append(True)
            out = out + 1.0
        return out
    torch.randn = shifted_first_draw
    try:
        two = generate_latents(model, requests, options, torch.Generator().manual_seed(1))[0].latents
    finally:
        torch.randn = original
    assert not torch.allclose(one[:patch], two[:patch])
    assert torch.allclose(one[patch:], two[patch:], atol=1e-6)
    model.config.flow.history_dropout = 0.0
    assert model.flow_reads_history
