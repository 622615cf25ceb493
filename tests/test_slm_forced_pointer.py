"""The forced text pointer: CTC forced alignment, the aligned store, training batches, the pace head and TTS."""
import itertools
import json

import pytest
import torch

from holitok_slm import layout
from holitok_slm.infer.align import AlignmentError, align_points, ctc_viterbi, points_from_path
from holitok_slm.infer.tts import POINTER_END_MARGIN, TTSOptions, TTSRequest, generate_latents, stream_patches
from holitok_slm.tiny import build_tiny_model, randomize_heads, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def _collapse(path, blank):
    out = [k for k, _ in itertools.groupby(path)]
    return [k for k in out if k != blank]


@pytest.mark.parametrize("labels", [[1, 2], [1, 1], [2, 1, 2]])
def test_ctc_viterbi_finds_the_most_likely_path_of_the_labels(labels):
    torch.manual_seed(len(labels))
    steps, blank = 6, 0
    log_probs = torch.log_softmax(torch.randn(steps, 3) * 2, -1)
    best, best_score = None, float("-inf")
    for path in itertools.product(range(3), repeat=steps):  # every path that spells the labels
        if _collapse(path, blank) == labels:
            score = float(sum(log_probs[t, k] for t, k in enumerate(path)))
            if score > best_score:
                best, best_score = path, score
    found = ctc_viterbi(log_probs, labels, blank)
    # the label index each step of the best path emits (or last emitted, on a blank)
    expected, seen = [], -1
    for k, (symbol, previous) in enumerate(zip(best, (None,) + best[:-1])):
        if symbol != blank and (symbol != previous):
            seen += 1
        expected.append(seen)
    assert found.tolist() == expected


def test_ctc_viterbi_refuses_labels_that_need_more_steps_than_the_audio_has():
    log_probs = torch.log_softmax(torch.randn(3, 4), -1)
    with pytest.raises(AlignmentError, match="need 4 CTC steps"):
        ctc_viterbi(log_probs, [1, 1, 2], blank=0)  # a repeated label needs a blank between
    assert ctc_viterbi(log_probs, [], blank=0).tolist() == [-1, -1, -1]


def test_points_from_path_run_from_each_label_start_to_the_next():
    path = torch.tensor([-1, 0, 0, 0, 1, 2, 2])
    points = points_from_path(path, 3)
    assert torch.allclose(points, torch.tensor([0.0, 0.0, 1 / 3, 2 / 3, 1.0, 2.0, 2.5]))


def forced_model(tmp_path, ctc=True):
    cfg = tiny_config("patch")
    cfg.text_pointer, cfg.text_pointer_alignment = True, "forced"
    cfg.flow.asr_ctc_weight = 1.0 if ctc else 0.0
    cfg.flow.ctc_steps_per_patch = 4
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))
    torch.manual_seed(1)
    with torch.no_grad():
        torch.nn.init.normal_(model.pointer.proj.weight, std=0.1)
    return model.eval()


def test_a_forced_pointer_needs_the_uniform_pointer_switched_on_and_a_known_alignment(tmp_path):
    cfg = tiny_config("patch")
    cfg.text_pointer_alignment = "forced"
    with pytest.raises(ValueError, match="needs model.text_pointer"):
        build_tiny_model(TEXTS, tmp_path, cfg)
    cfg.text_pointer, cfg.text_pointer_alignment = True, "ctc"
    with pytest.raises(ValueError, match="must be one of"):
        build_tiny_model(TEXTS, tmp_path, cfg)


def test_align_points_are_monotone_over_every_frame_and_need_a_trained_ctc(tmp_path):
    model = forced_model(tmp_path)
    latents = torch.randn(22, 16, generator=torch.Generator().manual_seed(0))
    text = "the cat sat"
    points = align_points(model, latents, text)
    count = len(model.text_tokenizer.encode(text))
    assert points.shape == (22,) and points[0] == 0
    assert bool((points.diff() >= 0).all()) and float(points.max()) < count
    assert set(range(count)) <= set(points.floor().long().tolist())  # every token gets frames
    with pytest.raises(AlignmentError, match="more|need"):
        align_points(model, latents[:4], "the cat sat on the mat " * 3)
    with pytest.raises(AlignmentError, match="asr_ctc_weight"):
        align_points(forced_model(tmp_path / "b", ctc=False), latents, text)


def _items(gen):
    return [dict(id="a", task="tts", text="the cat sat", latents=torch.randn(28, 16, generator=gen),
                 text_points=torch.linspace(0, 3.5, 28)),
            dict(id="b", task="asr", text="hello world", latents=torch.randn(12, 16, generator=gen)),
            dict(id="c", task="tts", text="a dog ran", latents=torch.randn(22, 16, generator=gen),
                 text_points=torch.cat([torch.zeros(6), torch.linspace(0, 2.9, 16)]))]


def test_training_reads_each_patch_s_aligned_point_and_trains_the_pace_head(tmp_path):
    model = forced_model(tmp_path)
    tok, width, radius = model.text_tokenizer, model.backbone.hidden_size, model.pointer.radius
    with torch.no_grad():  # the pointer hands on exactly the embedding of the token it points at
        model.pointer.proj.weight.zero_()
        model.pointer.proj.weight[:, radius * width:(radius + 1) * width] = torch.eye(width)
    items = _items(torch.Generator().manual_seed(3))
    batch = model.collate(items)
    assert torch.isnan(batch["text_points"][1]).all()  # ASR rows have none
    args = [batch[key] for key in ("input_ids", "latents", "frame_mask", "audio_offset", "num_patches")]
    with torch.no_grad():
        pointed = model.embed_inputs(*args, text_points=batch["text_points"])
        pointer, model.pointer = model.pointer, None
        without = model.embed_inputs(*args)
        model.pointer = pointer
    for i in (0, 2):
        offset, n = int(batch["audio_offset"][i]), int(batch["num_patches"][i])
        text = model.backbone.embed(torch.tensor(tok.encode(items[i]["text"])))
        frames = items[i]["text_points"]
        for k in range(n):  # the centre of the patch it predicts (its next one; the last frame past the end)
            point = float(frames[min((k + 1) * 4 + 2, frames.shape[0] - 1)])
            assert float(batch["text_points"][i, k]) == pytest.approx(point)
            token = min(int(point), len(text) - 1)
            assert torch.allclose(pointed[i, offset + k] - without[i, offset + k], text[token], atol=1e-5)
    model.train()
    out = model(**batch)
    assert torch.isfinite(out["pace_loss"]) and float(out["pace_loss"]) > 0
    out["loss"].backward()
    assert model.pace_head.weight.grad is not None and model.pace_head.weight.grad.abs().sum() > 0
    del items[0]["text_points"]
    with pytest.raises(ValueError, match="needs text_points"):
        model(**model.collate(items))


def test_pace_loss_is_the_l1_of_each_move_from_the_position_before(tmp_path):
    model = forced_model(tmp_path)
    items = _items(torch.Generator().manual_seed(4))
    batch = model.collate(items)
    hidden = model.hidden_states(*[batch[k] for k in ("input_ids", "attention_mask", "latents", "frame_mask",
                                                      "audio_offset", "num_patches")], text_points=batch["text_points"])
    moves, targets = [], []
    for i in (0, 2):
        offset, n = int(batch["audio_offset"][i]), int(batch["num_patches"][i])
        points = batch["text_points"][i, :n]
        targets.append(points - torch.cat([torch.zeros(1), points[:-1]]))
        moves.append(model.pace(hidden[i, offset - 1:offset + n - 1]))
    expected = (torch.cat(moves) - torch.cat(targets)).abs().mean()
    loss = model._pace_loss(hidden, batch["text_points"], batch["audio_offset"], batch["num_patches"],
                            batch["is_tts"])
    assert torch.allclose(loss, expected, atol=1e-6)


def test_generation_moves_the_pointer_by_the_pace_head_or_follows_an_oracle(tmp_path):
    model = forced_model(tmp_path)
    gen = torch.Generator().manual_seed(5)
    prompt = torch.randn(16, 16, generator=gen)
    request = TTSRequest("hello world", prompt_latents=prompt, prompt_text="a dog ran")
    options = TTSOptions.from_model(model, max_patches=4, eos_threshold=2.0)
    seen, states = [], []
    pre = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    post = model.backbone.register_forward_hook(lambda module, inputs, out: states.append(out[:, -1].detach()))
    try:
        patches = [raw for raw, _ in stream_patches(model, [request], options, torch.Generator().manual_seed(0))]
    finally:
        pre.remove()
        post.remove()
    tok = model.text_tokenizer
    text_ids, lengths = layout.pad_texts(tok, [tok.encode("a dog ran hello world")])
    prompt_points = layout.patch_points(align_points(model, prompt, "a dog ran"), 4, 4)
    point = prompt_points[-1]
    # backbone calls: the prompt's alignment (an ASR pass), the prefix, then one per generated patch
    assert len(seen) == 2 + len(patches)
    for k, raw in enumerate(patches):  # each generated patch: the point before it + the pace head's move
        point = torch.clamp(point + model.pace(states[k + 1][0]), max=float(lengths[0]) - 1 - POINTER_END_MARGIN)
        expected = model.embed_patch(model.normalize_latents(raw))[0] + model.pointer_embeds(
            text_ids, lengths, point.reshape(1, 1))[0, 0]
        assert torch.allclose(seen[k + 2][0, 0], expected, atol=1e-5)
    # an oracle replaces the prompt's alignment and the pace head
    oracle = torch.tensor([0.2, 0.9, 1.7, 2.4, 3.1, 3.3, 4.0, 4.6])
    seen.clear()
    pre = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    try:
        request.text_points = oracle
        patches = [raw for raw, _ in stream_patches(model, [request], options, torch.Generator().manual_seed(0))]
    finally:
        pre.remove()
    for k, raw in enumerate(patches[:-1]):
        expected = model.embed_patch(model.normalize_latents(raw))[0] + model.pointer_embeds(
            text_ids, lengths, oracle[4 + k].reshape(1, 1))[0, 0]
        assert torch.allclose(seen[k + 1][0, 0], expected, atol=1e-5)
    # given for the prompt alone, the pace head takes over after it
    seen.clear()
    states.clear()
    pre = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    post = model.backbone.register_forward_hook(lambda module, inputs, out: states.append(out[:, -1].detach()))
    try:
        request.text_points = oracle[:4]
        patches = [raw for raw, _ in stream_patches(model, [request], options, torch.Generator().manual_seed(0))]
    finally:
        pre.remove()
        post.remove()
    point = oracle[3]
    for k, raw in enumerate(patches):
        point = torch.clamp(point + model.pace(states[k][0]), max=float(lengths[0]) - 1 - POINTER_END_MARGIN)
        expected = model.embed_patch(model.normalize_latents(raw))[0] + model.pointer_embeds(
            text_ids, lengths, point.reshape(1, 1))[0, 0]
        assert torch.allclose(seen[k + 1][0, 0], expected, atol=1e-5)


def test_forced_generation_with_kv_cache_equals_without_and_needs_a_prompt_transcript(tmp_path):
    model = forced_model(tmp_path)
    g = torch.Generator().manual_seed(5)
    requests = [TTSRequest("the cat sat"),
                TTSRequest("hello world", prompt_latents=torch.randn(16, 16, generator=g), prompt_text="a dog ran")]
    options = TTSOptions.from_model(model, max_patches=5, eos_threshold=2.0)
    cached = generate_latents(model, requests, options, torch.Generator().manual_seed(1))
    options.use_cache = False
    recomputed = generate_latents(model, requests, options, torch.Generator().manual_seed(1))
    for a, b in zip(cached, recomputed):
        assert a.latents.shape == (5 * 4, 16) and torch.allclose(a.latents, b.latents, atol=1e-5)
    with pytest.raises(ValueError, match="needs its transcript"):
        generate_latents(model, [TTSRequest("hi", prompt_latents=torch.randn(8, 16, generator=g))], options)


def test_align_store_writes_points_that_training_reads_and_checks_the_tokenizer(tmp_path):
    from data_prep.align_latents import align_store
    from data_prep.toy_store import write_toy_store
    from holitok_slm.train.latent_store import BadItem, LatentStore
    from holitok_slm.train.model_setup import check_text_points

    model = forced_model(tmp_path / "m")
    store_dir = tmp_path / "store"
    write_toy_store(store_dir, num_items=6, latent_dim=16, shard_size=4, frames=(40, 60), seed=0)
    store = LatentStore(store_dir)
    with pytest.raises(FileNotFoundError, match="align_latents"):
        check_text_points(model.config, [store], model.text_tokenizer)
    index = align_store(store_dir, model, "tiny", progress=False)
    check_text_points(model.config, [store], model.text_tokenizer)
    unaligned = {entry["id"] for entry in index["unaligned_this_run"]}
    aligned = [i for i in range(len(store)) if store.ids[i] not in unaligned]
    assert len(aligned) >= 3
    for i in aligned:
        item = store.load(i, with_points=True)
        assert torch.allclose(item["text_points"], align_points(model, item["latents"], item["text"]))
    for i in set(range(len(store))) - set(aligned):
        with pytest.raises(BadItem, match="unaligned"):
            store.load(i, with_points=True)
    # an item the alignment could not place is refused when it is drawn, not trained on
    points_file = store_dir / "points" / "index.json"
    probe = json.loads(points_file.read_text())
    probe["probe"]["ids"] = [1, 2, 3]
    points_file.write_text(json.dumps(probe))
    with pytest.raises(ValueError, match="another text tokenizer"):
        check_text_points(model.config, [store], model.text_tokenizer)
    from safetensors.torch import load_file, save_file
    shard = store_dir / "points" / "shard-00000.safetensors"
    tensors = load_file(str(shard))
    tensors["points"][:] = float("nan")
    save_file(tensors, str(shard))
    with pytest.raises(BadItem, match="unaligned"):
        LatentStore(store_dir).load(0, with_points=True)


def test_text_points_for_a_model_without_a_forced_pointer_are_refused(tmp_path):
    cfg = tiny_config("patch")
    cfg.text_pointer = True  # uniform: it never reads given points, so they must not be silently dropped
    model = randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))
    request = TTSRequest("the cat sat", text_points=torch.zeros(3))
    with pytest.raises(ValueError, match="forced text pointer"):
        generate_latents(model, [request], TTSOptions.from_model(model, max_patches=2))


def test_frame_points_map_several_ctc_steps_per_frame_to_the_frame_s_first_step():
    from holitok_slm.infer.align import frame_points

    # 6 steps for 3 frames; labels [1, 2]: the best path puts label 1 at step 2 and label 2 at step 4; with 3
    # steps for 6 frames each step covers two frames and a label runs to the next one's start
    log_probs = torch.full((6, 3), -10.0)
    for step, symbol in enumerate([0, 0, 1, 0, 2, 2]):
        log_probs[step, symbol] = 0.0
    assert frame_points(log_probs, [1, 2], 0, 3).tolist() == [0.0, 0.0, 1.0]
    assert frame_points(log_probs[::2], [1, 2], 0, 6).tolist() == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]


def test_ctc_aligner_hears_both_sides_ignores_padding_and_round_trips(tmp_path):
    from holitok_slm.model.ctc_aligner import CTCAligner, CTCAlignerConfig

    tok = build_tiny_model(TEXTS, tmp_path / "tok").text_tokenizer
    torch.manual_seed(0)
    aligner = CTCAligner(CTCAlignerConfig(latent_dim=16, width=32), tok).eval()
    x = torch.randn(1, 20, 16)
    later = x.clone()
    later[0, 15:] += 1.0
    with torch.no_grad():
        out, changed = aligner(x), aligner(later)
        assert out.shape == (1, 40, len(tok))
        assert not torch.allclose(out[0, :10], changed[0, :10])  # frame 15 reaches step 0: not causal
        padded = torch.cat([x, torch.randn(1, 20, 16) * 5], dim=1).expand(2, -1, -1).clone()
        assert torch.allclose(aligner(padded, torch.tensor([20, 40]))[0, :40], out[0], atol=1e-5)
    aligner.save_pretrained(tmp_path / "aligner")
    loaded = CTCAligner.from_pretrained(tmp_path / "aligner")
    with torch.no_grad():
        assert torch.equal(loaded(x), out)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(tmp_path / "aligner" / "model.safetensors"))
    weights["out.weight"] = weights["out.weight"][:-1]
    save_file(weights, str(tmp_path / "aligner" / "model.safetensors"))
    with pytest.raises(ValueError, match="out.weight"):
        CTCAligner.from_pretrained(tmp_path / "aligner")


def test_train_aligner_then_align_a_store_with_it(tmp_path):
    from data_prep.align_latents import align_store
    from data_prep.toy_store import write_toy_store
    from data_prep.train_aligner import train_aligner
    from holitok_slm.infer.align import align_points_with
    from holitok_slm.model.ctc_aligner import CTCAlignerConfig
    from holitok_slm.text_tokenizer import train_sentencepiece
    from holitok_slm.train.latent_store import LatentStore

    tok = build_tiny_model(TEXTS, tmp_path / "tok").text_tokenizer
    store_dir = tmp_path / "store"
    write_toy_store(store_dir, num_items=12, latent_dim=16, shard_size=5, frames=(40, 60), seed=2)
    aligner, summary = train_aligner(store_dir, tok, steps=30, batch_size=4, held_out=3,
                                     config=CTCAlignerConfig(width=32), progress=False)
    assert summary["loss_last"] < summary["loss_first"]  # it learns (random latents: it memorises)
    assert summary["held_out_token_error_rate"] >= 0
    index = align_store(store_dir, aligner, "aligner", progress=False)
    assert index["probe"]["ids"] == tok.encode(index["probe"]["text"].strip())
    store = LatentStore(store_dir)
    item = store.load(0, with_points=True)
    assert torch.allclose(item["text_points"], align_points_with(aligner, item["latents"], item["text"]))
    assert bool((item["text_points"].diff() >= 0).all())
    # the same aligner timing another tokenizer's tokens: the points count those, and training's probe check sees it
    texts = [store.meta(i)["text"] for i in range(len(store))]
    other = train_sentencepiece(texts * 5, tmp_path / "other.model", vocab_size=400)
    index = align_store(store_dir, aligner, "aligner", overwrite=True, progress=False, tokenizer=other)
    assert index["probe"]["ids"] == other.encode(index["probe"]["text"].strip()) != tok.encode(index["probe"]["text"].strip())
    item = LatentStore(store_dir).load(0, with_points=True)
    words = len(other.encode(item["text"].strip()))
    assert 0 <= float(item["text_points"].min()) and float(item["text_points"].max()) < words
    assert bool((item["text_points"].diff() >= 0).all())


def test_points_of_a_character_aligner_move_to_a_word_piece_tokenizer(tmp_path):
    from holitok_slm.infer.align import character_starts, retokenize_points
    from holitok_slm.text_tokenizer import train_sentencepiece

    texts = TEXTS * 20
    chars = train_sentencepiece(texts, tmp_path / "chars.model", vocab_size=0)     # no room for merges
    pieces = train_sentencepiece(texts, tmp_path / "pieces.model", vocab_size=290)
    text = "the cat sat on the park"
    char_ids, piece_ids = chars.encode(text), pieces.encode(text)
    assert len(piece_ids) < len(char_ids)
    src, dst = character_starts(chars, text), character_starts(pieces, text)
    assert src[-1] == dst[-1] == len(text.replace(" ", ""))
    # a point where a source token starts lands where the target token holding that character does, and a point
    # half-way through a word piece's characters lands half-way through that piece
    starts = [float(torch.nonzero(src == c)[-1]) for c in dst[:-1].tolist()]
    got = retokenize_points(torch.tensor(starts), text, chars, pieces)
    expected = torch.tensor([float(torch.nonzero(dst == c)[-1]) for c in dst[:-1].tolist()])
    assert torch.allclose(got, expected)
    # monotone, inside [0, pieces), and the identity for the same tokenizer
    sweep = torch.linspace(0, len(char_ids) - 0.01, 300)
    moved = retokenize_points(sweep, text, chars, pieces)
    assert bool((moved.diff() >= 0).all()) and moved.min() >= 0 and moved.max() < len(piece_ids)
    # to the same tokenizer every point inside a token that writes characters stays put (a space piece is skipped)
    written = (src.diff() > 0)[sweep.floor().long()]
    same = retokenize_points(sweep, text, chars, chars)
    assert torch.allclose(same[written], sweep[written], atol=1e-4) and not torch.allclose(same, sweep, atol=1e-4)


def test_a_model_keeps_the_aligner_of_its_store_and_aligns_prompts_with_it(tmp_path):
    from holitok_slm.infer.align import align_points_with
    from holitok_slm.infer.tts import _prompt_points
    from holitok_slm.model.ctc_aligner import CTCAligner, CTCAlignerConfig
    from holitok_slm.model.unified import UnifiedModel

    model = forced_model(tmp_path / "m")
    torch.manual_seed(3)
    reader = CTCAligner(CTCAlignerConfig(latent_dim=16, width=32), model.text_tokenizer).eval()
    prompt = torch.randn(24, 16)
    request = TTSRequest("hello world", prompt_latents=prompt, prompt_text="the cat sat")
    item = layout.tts_request_layout(model.text_tokenizer, model.config, request.text, prompt, request.prompt_text)
    own = align_points(model, prompt, "the cat sat")
    model.attach_aligner(reader)
    model.save_pretrained(tmp_path / "saved")
    loaded = UnifiedModel.from_pretrained(tmp_path / "saved")
    assert loaded.aligner is not None and torch.equal(loaded.aligner.out.weight, reader.out.weight)
    expected = align_points_with(reader, prompt, "the cat sat", model.text_tokenizer)
    assert not torch.allclose(expected, own)
    got = _prompt_points(loaded, request, item)
    assert torch.allclose(got, layout.patch_points(expected, item.num_patches, model.config.patch_size))
    with pytest.raises(ValueError, match="forced text pointer"):
        build_tiny_model(TEXTS, tmp_path / "plain").attach_aligner(reader)


def test_the_run_keeps_one_aligner_shared_by_all_its_stores_and_refuses_a_mix(tmp_path):
    from data_prep.align_latents import align_store
    from data_prep.toy_store import write_toy_store
    from holitok_slm.model.ctc_aligner import CTCAligner, CTCAlignerConfig
    from holitok_slm.train.latent_store import LatentStore
    from holitok_slm.train.model_setup import store_aligner

    model = forced_model(tmp_path / "m")
    reader = CTCAligner(CTCAlignerConfig(latent_dim=16, width=16), model.text_tokenizer).eval()
    reader.save_pretrained(tmp_path / "reader")
    stores = []
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        write_toy_store(tmp_path / name, num_items=4, latent_dim=16, frames=(40, 50), seed=seed)
        stores.append(LatentStore(tmp_path / name))
    for store in stores[:2]:
        align_store(store.path, reader, str(tmp_path / "reader"), progress=False)
    kept = store_aligner(model.config, stores[:2])
    assert kept is not None and torch.equal(kept.out.weight, reader.out.weight)
    align_store(stores[2].path, model, "the unified model", progress=False)
    assert store_aligner(model.config, stores[2:]) is None   # its own CTC aligned it: nothing to keep
    with pytest.raises(ValueError, match="different aligners"):
        store_aligner(model.config, stores)


def test_the_pace_head_never_moves_the_pointer_past_where_a_forced_alignment_ends(tmp_path):
    # Training points end inside the second-to-last token (holitok_slm/infer/align.py frame_points); a pointer run
    # on to the end of the text was never seen and its stop head never fired (docs/learning.md section 24).
    model = forced_model(tmp_path)
    with torch.no_grad():
        model.pace_head.bias.fill_(30.0)  # a move of ~30 tokens per patch: past the end at the first step
    prompt = torch.randn(16, 16, generator=torch.Generator().manual_seed(5))
    request = TTSRequest("hello world", prompt_latents=prompt, prompt_text="a dog ran")
    seen = []
    pre = model.backbone.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    try:
        patches = [raw for raw, _ in stream_patches(model, [request], TTSOptions.from_model(
            model, max_patches=3, eos_threshold=2.0), torch.Generator().manual_seed(0))]
    finally:
        pre.remove()
    tok = model.text_tokenizer
    text_ids, lengths = layout.pad_texts(tok, [tok.encode("a dog ran hello world")])
    end = torch.tensor([[float(lengths[0]) - 1 - POINTER_END_MARGIN]])
    for k, raw in enumerate(patches):
        expected = model.embed_patch(model.normalize_latents(raw))[0] + model.pointer_embeds(text_ids, lengths, end)[0, 0]
        assert torch.allclose(seen[k + 2][0, 0], expected, atol=1e-5)
        beyond = model.embed_patch(model.normalize_latents(raw))[0] + model.pointer_embeds(
            text_ids, lengths, lengths[None].float())[0, 0]
        assert not torch.allclose(seen[k + 2][0, 0], beyond, atol=1e-5)
