"""Unified model: batching contract, losses, gradient paths, checkpoints, config and tokenizer behaviour."""
import json

import pytest
import torch

from holitok_slm.config import TextTokenizerConfig, UnifiedConfig, load_unified_config
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.text_tokenizer import AUDIO_START, PAD, TextTokenizer
from holitok_slm.tiny import build_tiny_model, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def _items(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [dict(id=f"u{i}", task=task, text=text, latents=torch.randn(5 + 3 * i, 16, generator=g))
            for i, (task, text) in enumerate(zip(["tts", "asr", "tts"], TEXTS))]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    return build_tiny_model(TEXTS, tmp_path_factory.mktemp("tok"))


def test_collate_layout(model):
    items = _items()
    batch = model.collate(items)
    tok = model.text_tokenizer
    # TTS item 0: 5 frames -> trailing partial patch dropped -> 1 patch; stop labels: audio_start=0, patch=1.
    offset, n = batch["audio_offset"][0].item(), batch["num_patches"][0].item()
    assert n == 1 and batch["input_ids"][0, offset - 1] == tok.id(AUDIO_START)
    assert batch["stop_labels"][0, offset - 1:offset + n].tolist() == [0.0, 1.0]
    assert (batch["stop_labels"][0] >= 0).sum() == n + 1
    # ASR item 1: 8 frames -> 2 patches; text labels are the transcript then <|text_end|>, none on the audio.
    labels = batch["text_labels"][1]
    target = labels[labels != -100].tolist()
    assert tok.decode(target) == TEXTS[1] and target[-1] == tok.id("<|text_end|>")
    assert (batch["stop_labels"][1] < 0).all()
    # Labels are shifted: the label at position i is the input at i + 1.
    pos = (labels != -100).nonzero().flatten()[:-1]
    assert torch.equal(batch["input_ids"][1, pos + 1], labels[pos])


def test_losses_are_finite_and_separate(model):
    out = model(**model.collate(_items()))
    for key in ("loss", "flow_loss", "stop_loss", "text_loss"):
        assert torch.isfinite(out[key]) and out[key] > 0
    assert not out["flow_loss"].requires_grad and out["loss"].requires_grad
    assert out["num_flow_frames"] == 4 + 8  # whole patches of the two TTS items (5 -> 4 frames, 11 -> 8)
    assert out["num_text_tokens"] > 0


@pytest.mark.parametrize("task", ["asr", "tts"])
def test_ctc_is_the_spoken_text_spelled_over_the_audio_positions(model, task):
    noise = torch.Generator().manual_seed(1)
    items = [dict(id="a", task="asr", text="hello world", latents=torch.randn(40, 16, generator=noise)), *_items()]
    batch = model.collate(items)
    weight = f"{task}_ctc_weight"
    key = "ctc_loss" if task == "asr" else "tts_ctc_loss"
    try:
        plain = model(**batch)
        assert "ctc_loss" not in plain and "tts_ctc_loss" not in plain
        setattr(model.config.flow, weight, 0.5)
        out = model(**batch)
        with pytest.raises(ValueError, match="ctc_labels"):
            model(**{k: v for k, v in batch.items() if k != "ctc_labels"})
    finally:
        setattr(model.config.flow, weight, 0.0)
    # Independent computation: each item's hidden states at its own audio positions, its own text as the target.
    tok = model.text_tokenizer
    with torch.no_grad():
        audio = model.embed_audio(batch["latents"], batch["frame_mask"], batch["num_patches"])
        embeds = model.merge_embeddings(batch["input_ids"], audio, batch["audio_offset"], batch["num_patches"])
        positions = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
        hidden = model.backbone(embeds, batch["attention_mask"], positions)
        rows = [i for i, item in enumerate(items) if item["task"] == task]
        assert rows
        losses = []
        for r in rows:
            start, n = int(batch["audio_offset"][r]), int(batch["num_patches"][r])
            log_probs = torch.log_softmax(model.backbone.text_logits(hidden[r, start:start + n]).float(), -1)
            target = torch.tensor(tok.encode(items[r]["text"]))
            losses.append(torch.nn.functional.ctc_loss(log_probs[:, None], target[None], [n], [len(target)],
                                                       blank=tok.id(PAD), reduction="sum", zero_infinity=True)
                          / len(target))
    expected = torch.stack(losses).mean()
    assert torch.isfinite(out[key]) and torch.allclose(out[key], expected, rtol=1e-4, atol=1e-5)
    components = out["flow_loss"] + out["stop_loss"] + out["text_loss"] + 0.5 * out[key]
    assert torch.allclose(out["loss"].detach(), components, rtol=1e-4, atol=1e-5)


def test_a_tts_item_without_its_text_is_laid_out_with_an_empty_text_and_spells_nothing(model):
    from holitok_slm import layout

    noise = torch.Generator().manual_seed(5)
    item = dict(id="t0", task="tts", text="the cat sat", latents=torch.randn(16, 16, generator=noise))
    dropped = layout.training_layout(model.text_tokenizer, model.config, {**item, "text_dropped": True})
    empty = layout.tts_layout(model.text_tokenizer, model.config, "", item["latents"])
    assert dropped.ids == empty.ids and dropped.spoken == []
    # what generation's text-free branch starts from is this layout cut where the prompt ends
    free = layout.text_free_request_layout(model.text_tokenizer, model.config, item["latents"][:8])
    assert free.ids == dropped.ids[:free.audio_offset + free.num_patches]
    model.config.flow.tts_ctc_weight = 0.5
    try:
        out = model(**model.collate([{**item, "text_dropped": True}]))
        kept = model(**model.collate([item]))
    finally:
        model.config.flow.tts_ctc_weight = 0.0
    assert out["tts_ctc_loss"] == 0.0 and kept["tts_ctc_loss"] > 0.0  # nothing to spell: left out, not "all blank"


def test_ctc_warns_once_when_most_items_cannot_be_aligned(model, caplog):
    """More text tokens than patches: CTC adds nothing for that item (zero_infinity); silence would hide it."""
    noise = torch.Generator().manual_seed(2)
    items = [dict(id=f"t{i}", task="tts", text="hello world, this sentence is long",
                  latents=torch.randn(8, 16, generator=noise)) for i in range(2)]
    model._warned_unalignable_ctc = False
    model.config.flow.tts_ctc_weight = 0.5
    try:
        with caplog.at_level("WARNING", logger="holitok_slm.model.unified"):
            out = model(**model.collate(items))
            model(**model.collate(items))
    finally:
        model.config.flow.tts_ctc_weight = 0.0
    assert out["tts_ctc_loss"] == 0.0
    warnings = [r for r in caplog.records if "more text tokens than CTC steps" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 2 items" in warnings[0].getMessage()


@pytest.mark.parametrize("tasks", [("tts",), ("asr",), ("tts", "asr")])
@pytest.mark.parametrize("variant", ["patch", "semantic", "semantic_frozen"])
def test_every_trainable_parameter_gets_a_gradient(tmp_path, tasks, variant):
    cfg = tiny_config("semantic" if variant.startswith("semantic") else "patch", variant != "semantic_frozen")
    model = build_tiny_model(TEXTS, tmp_path, cfg)
    items = [item for item in _items() if item["task"] in tasks]
    model(model.collate(items))["loss"].backward()  # model(batch) form of the contract
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    if variant == "semantic_frozen":
        assert all(not p.requires_grad for p in model.semantic_input.encoder.parameters())


def test_frozen_semantic_encoder_uses_precomputed_features(tmp_path):
    model = build_tiny_model(TEXTS, tmp_path, tiny_config("semantic", semantic_trainable=False)).eval()
    items = _items()
    with torch.no_grad():
        for item in items:
            item["semantic"] = model.semantic_input.encode(item["latents"][None])[0]
        torch.manual_seed(3)
        with_features = model(model.collate(items))
        for item in items:
            item["semantic"] = torch.zeros_like(item["semantic"])
        torch.manual_seed(3)
        zeros = model(model.collate(items))
        for item in items:
            del item["semantic"]
        torch.manual_seed(3)
        recomputed = model(model.collate(items))
    assert torch.allclose(with_features["loss"], recomputed["loss"], atol=1e-5)
    assert not torch.allclose(zeros["loss"], recomputed["loss"], atol=1e-3)


def test_cfg_dropout_zeroes_the_llm_condition(tmp_path):
    model = build_tiny_model(TEXTS, tmp_path)
    with torch.no_grad():  # adaLN-Zero and the zero output layer hide the condition until trained
        for p in model.dit.parameters():
            p.normal_(0, 0.05)
    items = _items()
    other_text = [dict(item, text="hello") for item in items]

    def flow_loss(batch_items, dropout, training=True):
        model.config.flow.cfg_dropout = dropout
        model.train(training)
        torch.manual_seed(1)
        return model(model.collate(batch_items))["flow_loss"]

    # Always dropped: the text (hence the LLM hidden state) no longer influences the flow loss.
    assert torch.allclose(flow_loss(items, 1.0), flow_loss(other_text, 1.0))
    # Never dropped, or at evaluation time: it does.
    assert not torch.allclose(flow_loss(items, 0.0), flow_loss(other_text, 0.0))
    assert not torch.allclose(flow_loss(items, 1.0, training=False), flow_loss(other_text, 1.0, training=False))


@pytest.mark.parametrize("bad, message", [
    (dict(task="tts", text="hi", latents=torch.full((8, 16), float("nan"))), "NaN"),
    (dict(task="asr", text="hi", latents=torch.zeros(8, 3)), r"\[T, 16\]"),
    (dict(task="tts", text="  ", latents=torch.zeros(8, 16)), "empty"),
    (dict(task="vc", text="hi", latents=torch.zeros(8, 16)), "task"),
    (dict(task="asr", text="hi", latents=torch.zeros(0, 16)), "no frames"),
])
def test_bad_items_are_rejected_with_the_item_id(model, bad, message):
    with pytest.raises(ValueError, match=message):
        model.collate([dict(id="broken-7", **bad)])
    with pytest.raises(ValueError, match="broken-7"):
        model.collate([dict(id="broken-7", **bad)])


def test_fit_data_statistics_normalises_latents(model):
    items = [dict(id="a", task="tts", text="hello world", latents=torch.randn(40, 16) * 3 + 2)]
    stats = model.fit_data_statistics(items)
    normalized = model.normalize_latents(items[0]["latents"])
    assert abs(normalized.mean().item()) < 1e-4 and abs(normalized.std().item() - 1) < 1e-3
    assert torch.allclose(model.denormalize_latents(normalized), items[0]["latents"], atol=1e-5)
    assert stats["patches_per_token"] == pytest.approx(10 / len(model.text_tokenizer.encode("hello world")))
    assert "latent_scale" in model.state_dict() and "latent_bias" in model.state_dict()


def test_save_and_load_round_trip(model, tmp_path):
    model.latent_scale.fill_(0.5)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = UnifiedModel.from_pretrained(tmp_path / "ckpt")
    batch = model.collate(_items())
    model.eval(), loaded.eval()
    torch.manual_seed(0)
    a = model(batch)
    torch.manual_seed(0)
    b = loaded(batch)
    assert torch.equal(a["loss"], b["loss"])
    assert loaded.latent_scale.item() == 0.5
    assert loaded.text_tokenizer.encode("the cat") == model.text_tokenizer.encode("the cat")


def test_mismatched_checkpoint_names_keys_and_shapes(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    cfg["dit"]["num_layers"] = 1
    cfg["dit"]["ffn_hidden_size"] = 96
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"unexpected=\['dit\.blocks\.1.*shape_mismatch=\['dit\.blocks\.0\.ffn"):
        UnifiedModel.from_pretrained(tmp_path / "ckpt")


def test_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model:\n  dit: {hidden_size: 64, num_layer: 2}\n")
    with pytest.raises(ValueError, match="num_layer"):
        load_unified_config(path)
    with pytest.raises(ValueError, match="audio_input"):
        UnifiedConfig(audio_input="mel")


def test_qwen_tokenizer_offline_matches_known_ids_and_blocks_special_injection():
    tok = TextTokenizer.build(TextTokenizerConfig(kind="qwen"))
    assert tok.encode("Hello, world!") == [9707, 11, 1879, 0]  # known Qwen2 ids
    assert len(tok) <= 151936  # added tokens fit the Qwen2.5 embedding table without resizing
    assert tok.id(AUDIO_START) not in tok.encode(f"say {AUDIO_START} please")
    assert tok.decode(tok.encode("你好, wörld")) == "你好, wörld"


def test_sentencepiece_handles_unseen_characters(model):
    tok = model.text_tokenizer
    text = "zebra ü 你 🙂"
    assert tok.decode(tok.encode(text)) == text  # byte fallback: nothing becomes <unk>
    assert tok.id(AUDIO_START) not in tok.encode(AUDIO_START)


def test_backbone_loads_from_a_local_hf_directory(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    hf.save_pretrained(tmp_path / "qwen")
    cfg = tiny_config()
    cfg.backbone.pretrained_path = str(tmp_path / "qwen")
    model = build_tiny_model(TEXTS, tmp_path / "tok", cfg)
    assert torch.equal(model.backbone.lm.model.layers[0].mlp.up_proj.weight, hf.model.layers[0].mlp.up_proj.weight)
    # The loaded shape is recorded, so the checkpoint rebuilds without the original directory.
    assert model.config.backbone.pretrained_path is None and model.config.backbone.hidden_size == 32
    model.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "qwen" / "config.json").unlink()
    loaded = UnifiedModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.backbone.lm.model.embed_tokens.weight, model.backbone.lm.model.embed_tokens.weight)
    cfg.backbone.pretrained_path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing"):
        UnifiedModel(cfg, model.text_tokenizer)


def test_hf_tokenizer_directory_gets_our_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=80, special_tokens=["[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(tmp_path / "hf")
    tok = TextTokenizer.build(TextTokenizerConfig(kind="hf", path=str(tmp_path / "hf")))
    assert len(set(tok.special_ids.values())) == len(tok.special_ids)
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"
    tok.save(tmp_path / "saved")
    assert TextTokenizer.load(tmp_path / "saved").special_ids == tok.special_ids
    with pytest.raises(FileNotFoundError):
        TextTokenizer.build(TextTokenizerConfig(kind="hf", path=str(tmp_path / "nope")))


def test_prompt_templates(model):
    from holitok_slm import layout

    tok = model.text_tokenizer
    plain = layout.tts_prefix_ids(tok, "hello world")
    controlled = layout.tts_prefix_ids(tok, "hello world", instruction="whisper")
    assert plain[0] == tok.id("<|task_tts|>") and plain[-1] == tok.id(AUDIO_START)
    start, end = controlled.index(tok.id("<|instruct_start|>")), controlled.index(tok.id("<|instruct_end|>"))
    assert tok.decode(controlled[start + 1:end]) == "whisper"
    assert controlled[end + 1:] == plain[1:]  # same text/audio layout after the instruction block
    assert layout.asr_prefix_ids(tok) == [tok.id("<|task_asr|>"), tok.id(AUDIO_START)]
    assert layout.join_prompt_and_target_text("a dog ran.", "hello") == "a dog ran. hello"
    assert layout.join_prompt_and_target_text("你好。", "世界") == "你好。世界"
    batch = model.collate([dict(id="c", task="tts", text="hello world", instruction="whisper",
                                latents=torch.randn(8, 16))])
    assert batch["input_ids"][0, :len(controlled)].tolist() == controlled


def test_unite_encoder_loads_from_a_semantic_checkpoint(tmp_path):
    from holitok import SemanticConfig, SemanticModule

    torch.manual_seed(0)
    encoder = SemanticModule(SemanticConfig(input_dim=16, hidden_size=64, num_layers=1, num_heads=4,
                                            ffn_hidden_size=96))
    encoder.save_pretrained(tmp_path / "sem")
    cfg = tiny_config("semantic", semantic_trainable=False)
    cfg.semantic_input.encoder_path = str(tmp_path / "sem")
    model = build_tiny_model(TEXTS, tmp_path / "tok", cfg)
    assert torch.equal(model.semantic_input.encoder.in_proj.weight, encoder.in_proj.weight)
    assert cfg.semantic_input.encoder_path is None and cfg.semantic_input.encoder["ffn_hidden_size"] == 96
    model.save_pretrained(tmp_path / "ckpt")
    loaded = UnifiedModel.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(loaded.semantic_input.encoder.in_proj.weight, encoder.in_proj.weight)
    cfg = tiny_config("semantic")
    cfg.semantic_input.encoder = {"hidden_size": 32, "num_layers": 1, "num_heads": 4, "ffn_hidden_size": 64}
    with pytest.raises(ValueError, match="feature_dim"):
        build_tiny_model(TEXTS, tmp_path / "tok2", cfg)


def test_model_folders_written_before_the_text_tokenizer_rename_still_load(tmp_path):
    """`tokenizer` was the config section's and the folder's name before `text_tokenizer`: both still load."""
    import json
    import shutil

    from holitok_slm.model.unified import UnifiedModel
    from holitok_slm.tiny import build_tiny_model

    model = build_tiny_model(["some words for a tiny vocabulary", "and a few more of them"] * 10, tmp_path)
    model.save_pretrained(tmp_path / "new")
    assert (tmp_path / "new" / "text_tokenizer").is_dir()
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "new", old)
    (old / "text_tokenizer").rename(old / "tokenizer")
    config = json.loads((old / "config.json").read_text())
    config["tokenizer"] = config.pop("text_tokenizer")
    (old / "config.json").write_text(json.dumps(config))
    loaded = UnifiedModel.from_pretrained(old)
    assert loaded.text_tokenizer.encode("some words") == model.text_tokenizer.encode("some words")
    assert loaded.config.text_tokenizer == model.config.text_tokenizer
    config["text_tokenizer"] = config["tokenizer"]
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="both `tokenizer`"):
        UnifiedModel.from_pretrained(old)


def test_history_dropout_hides_the_previous_patch_from_the_flow_head_in_training_only_unless_always(model):
    seen = []
    handle = model.dit.register_forward_pre_hook(lambda module, args: seen.append(args[3].detach().clone()))
    items = [dict(id=f"t{i}", task="tts", text="the cat sat on the mat",
                  latents=torch.randn(24, 16, generator=torch.Generator().manual_seed(i))) for i in range(3)]
    batch = model.collate(items)
    was_training = model.training
    try:
        model.train()
        model(**batch)
        assert seen[-1].abs().sum() > 0  # patches after the first see their predecessor
        model.config.flow.history_dropout = 1.0
        model(**batch)
        assert seen[-1].abs().sum() == 0  # every history hidden
        model.eval()
        model(**batch)
        assert seen[-1].abs().sum() == 0  # a head trained on none never reads one
        model.config.flow.history_dropout = 0.9
        model(**batch)
        assert seen[-1].abs().sum() > 0  # below 1, never hidden at evaluation
    finally:
        model.config.flow.history_dropout = 0.0
        model.train(was_training)
        handle.remove()


def test_input_noise_reaches_what_tts_reads_in_training_never_the_targets_or_asr(model):
    gen = torch.Generator().manual_seed(0)
    items = [dict(id="t0", task="tts", text="the cat sat on the mat", latents=torch.randn(24, 16, generator=gen)),
             dict(id="a0", task="asr", text="the cat sat", latents=torch.randn(24, 16, generator=gen))]
    batch = model.collate(items)
    seen = []
    handle = model.patch_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    was_training = model.training
    try:
        model.config.flow.input_noise_std = 0.5
        torch.manual_seed(1)
        heard = model.noisy_tts_inputs(batch["latents"], batch["is_tts"])
        tts, asr = batch["is_tts"].nonzero()[0, 0], (~batch["is_tts"]).nonzero()[0, 0]
        assert torch.equal(heard[asr], batch["latents"][asr])  # ASR audio is real audio at inference too
        added = (model.normalize_latents(heard[tts]) - model.normalize_latents(batch["latents"][tts]))
        assert abs(added.std().item() - 0.5) < 0.05  # the std is in normalised units
        # the flow head's target is the clean patch, its history the noisy one
        hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"], heard, batch["frame_mask"],
                                     batch["audio_offset"], batch["num_patches"])
        args = (hidden, batch["latents"], batch["frame_mask"], batch["audio_offset"], batch["num_patches"],
                batch["is_tts"])
        model.eval()
        clean_target, _, clean_history, _ = model.flow_inputs(*args)
        target, _, history, _ = model.flow_inputs(*args, heard=heard)
        assert torch.equal(target, clean_target) and not torch.allclose(history[1:], clean_history[1:])
        model(**batch)
        clean_inputs = seen[-1]
        model.train()
        model(**batch)
        assert not torch.allclose(seen[-1], clean_inputs)  # training: the backbone reads noisy TTS patches
        model.eval()
        model(**batch)
        assert torch.equal(seen[-1], clean_inputs)  # never at evaluation
    finally:
        model.config.flow.input_noise_std = 0.0
        model.train(was_training)
        handle.remove()


def test_self_feeding_reads_the_models_own_teacher_forced_samples_in_training_never_as_targets(model):
    from holitok_slm.model.dit_head import sample_patch

    gen = torch.Generator().manual_seed(0)
    items = [dict(id="t0", task="tts", text="the cat sat on the mat", latents=torch.randn(22, 16, generator=gen)),
             dict(id="a0", task="asr", text="the cat sat", latents=torch.randn(24, 16, generator=gen))]
    batch = model.collate(items)
    flow, options = model.config.flow, model.config.generation
    seen = []
    handle = model.patch_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    was_training, temperature = model.training, options.temperature
    tts, asr = batch["is_tts"].nonzero()[0, 0], (~batch["is_tts"]).nonzero()[0, 0]
    args = (batch["input_ids"], batch["attention_mask"], batch["latents"], batch["frame_mask"], batch["audio_offset"],
            batch["num_patches"], batch["is_tts"])
    try:
        flow.self_feed_share, options.temperature = 1.0, 0.0  # every patch, deterministic samples
        model.eval()
        fed = model.self_fed_tts_inputs(*args)
        # the reference: the eval path's teacher-forced conditions and histories, sampled patch by patch
        hidden = model.hidden_states(*args[:6])
        _, condition, history, _ = model.flow_inputs(hidden, *args[2:])
        own = sample_patch(model.dit, condition, history, torch.zeros_like(history), flow.self_feed_steps,
                           options.cfg_strength, options.sway_coef)
        frames = int(batch["frame_mask"][tts].sum())
        expected = model.denormalize_latents(own).reshape(-1, own.shape[-1])[:frames]
        assert torch.allclose(fed[tts, :frames], expected, atol=1e-5)
        assert torch.equal(fed[tts, frames:], batch["latents"][tts, frames:])  # padding frames untouched
        assert torch.equal(fed[asr], batch["latents"][asr])  # ASR hears real audio
        assert not torch.allclose(fed[tts, :frames], batch["latents"][tts, :frames])
        # the flow head's targets stay the true patches, its history is what the model read
        target, _, fed_history, _ = model.flow_inputs(hidden, *args[2:], heard=fed)
        clean_target, _, _, _ = model.flow_inputs(hidden, *args[2:])
        assert torch.equal(target, clean_target) and not torch.allclose(fed_history[1:], history[1:])
        model(**{**batch, "latents": fed})
        fed_inputs = seen[-1]
        model(**batch)
        clean_inputs = seen[-1]  # never at evaluation
        assert not torch.allclose(fed_inputs, clean_inputs)
        model.train()
        model(**batch)
        assert torch.allclose(seen[-1], fed_inputs, atol=1e-5)  # training: the backbone reads its own patches
        flow.self_feed_share = 0.5
        torch.manual_seed(3)
        changed = sum((model.self_fed_tts_inputs(*args)[tts, :frames] != batch["latents"][tts, :frames]).any(-1)
                      .float().mean().item() for _ in range(20)) / 20
        assert 0.35 < changed < 0.65  # the share of patches read as the model's own
        with pytest.raises(ValueError, match="self_feed_share"):
            model(**batch, semantic=torch.zeros(2, 24, 4))
    finally:
        flow.self_feed_share, options.temperature = 0.0, temperature
        model.train(was_training)
        handle.remove()


def test_self_feed_settings_are_checked(tmp_path):
    for key, value in (("self_feed_share", 1.5), ("self_feed_share", -0.1), ("self_feed_steps", 0)):
        cfg = tiny_config()
        setattr(cfg.flow, key, value)
        with pytest.raises(ValueError, match=key):
            build_tiny_model(TEXTS, tmp_path, cfg)


def test_patch_regression_loss_is_the_conditions_own_guess_and_trains_the_backbone(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.flow.patch_regression_weight = 0.5
    model = build_tiny_model(TEXTS, tmp_path, cfg)
    items = [dict(id=f"t{i}", task="tts", text=TEXTS[i], latents=torch.randn(24, 16, generator=torch.Generator()
                  .manual_seed(i))) for i in range(3)]
    batch = model.collate(items)
    out = model(**batch)
    # Recomputed by hand: the regressor on the bridge's condition at the position before each patch.
    hidden = model.backbone(model.embed_inputs(batch["input_ids"], batch["latents"], batch["frame_mask"],
                                              batch["audio_offset"], batch["num_patches"]),
                            batch["attention_mask"], torch.arange(batch["input_ids"].shape[1])[None])
    errors = []
    for row in range(3):
        offset, count = int(batch["audio_offset"][row]), int(batch["num_patches"][row])
        guess = model.patch_regressor(model.bridge(hidden[row, offset - 1: offset - 1 + count]))
        true = model.normalize_latents(batch["latents"][row, : count * 4]).reshape(count, -1)
        errors.append((guess - true).pow(2))
    assert torch.allclose(out["patch_regression_loss"], torch.cat(errors).mean(), atol=1e-5)
    # It is part of the total: same noise, with and without its weight, the backbone's gradients differ.
    grads = []
    for weight in (0.5, 0.0):
        model.config.flow.patch_regression_weight = weight
        model.zero_grad()
        torch.manual_seed(1)
        model(**batch)["loss"].backward()
        grads.append(model.backbone.lm.model.layers[0].mlp.down_proj.weight.grad.clone())
        if weight:
            assert model.patch_regressor.weight.grad.abs().sum() > 0
    assert not torch.allclose(grads[0], grads[1])
    # Without the option the module does not exist, so older checkpoints keep their exact keys.
    plain = build_tiny_model(TEXTS, tmp_path / "plain")
    assert plain.patch_regressor is None and not any(k.startswith("patch_regressor") for k in plain.state_dict())


def test_noise_samples_give_each_patch_several_flow_draws_in_training_only(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.flow.noise_samples = 3
    model = build_tiny_model(TEXTS, tmp_path, cfg)
    items = [dict(id=f"t{i}", task="tts", text=TEXTS[i], latents=torch.randn(24, 16, generator=torch.Generator()
                  .manual_seed(i))) for i in range(2)]
    batch = model.collate(items)
    calls, real = [], model.dit.flow_matching_errors

    def recording(target, condition, history, *args):
        errors = real(target, condition, history, *args)
        calls.append((target, condition, history, errors))
        return errors

    model.dit.flow_matching_errors = recording
    model.train()
    torch.manual_seed(1)
    out = model(**batch)
    target, condition, history, errors = calls[-1]
    n = target.shape[0] // 3
    assert n == int(batch["num_patches"].sum()) and target.shape[0] == 3 * n
    for k in (1, 2):  # the same patches, conditions and histories, drawn again
        assert torch.equal(target[k * n:(k + 1) * n], target[:n]) and torch.equal(condition[k * n:(k + 1) * n],
                                                                                  condition[:n])
        assert torch.equal(history[k * n:(k + 1) * n], history[:n])
    assert not torch.allclose(errors[:n], errors[n:2 * n])  # with their own noise and time
    assert torch.allclose(out["flow_loss"], errors.mean(), atol=1e-6)  # every frame is valid here
    model.eval()
    model(**batch)
    assert calls[-1][0].shape[0] == n  # evaluation: one draw
    cfg.flow.noise_samples = 0
    with pytest.raises(ValueError, match="noise_samples"):
        build_tiny_model(TEXTS, tmp_path / "bad", cfg)


def test_ctc_with_one_step_per_latent_frame_aligns_text_longer_than_the_patches(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.flow.tts_ctc_weight, cfg.flow.ctc_steps_per_patch = 0.5, 4
    model = build_tiny_model(TEXTS, tmp_path, cfg)
    text = "hello world, this sentence is long"
    items = [dict(id="t", task="tts", text=text, latents=torch.randn(28, 16, generator=torch.Generator()
                  .manual_seed(3)))]
    batch = model.collate(items)
    tokens = model.text_tokenizer.encode(text)
    n = int(batch["num_patches"][0])
    assert n < len(tokens) <= 4 * n  # unalignable at one step per patch, alignable at four
    out = model(**batch)
    with torch.no_grad():
        hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["latents"],
                                     batch["frame_mask"], batch["audio_offset"], batch["num_patches"])
        start = int(batch["audio_offset"][0])
        states = model.ctc_expand(hidden[0, start:start + n]).view(4 * n, -1)
        log_probs = torch.log_softmax(model.backbone.text_logits(states).float(), -1)
        expected = torch.nn.functional.ctc_loss(log_probs[:, None], torch.tensor(tokens)[None], [4 * n],
                                                [len(tokens)], blank=model.text_tokenizer.id(PAD))
    assert out["tts_ctc_loss"] > 0 and torch.allclose(out["tts_ctc_loss"], expected, rtol=1e-4, atol=1e-5)
    out["loss"].backward()
    assert model.ctc_expand.weight.grad.abs().sum() > 0
    assert build_tiny_model(TEXTS, tmp_path / "plain").ctc_expand is None  # not built unless used
    cfg.flow.ctc_steps_per_patch = 3
    with pytest.raises(ValueError, match="ctc_steps_per_patch"):
        build_tiny_model(TEXTS, tmp_path / "bad", cfg)


def test_history_splice_reads_another_stretch_of_the_same_utterance_never_as_targets(tmp_path):
    cfg = tiny_config()
    cfg.flow.history_splice_share = 1.0
    model = build_tiny_model(TEXTS, tmp_path, cfg)
    gen = torch.Generator().manual_seed(7)
    items = [dict(id="a", task="tts", text=TEXTS[0], latents=torch.randn(40, 16, generator=gen)),
             dict(id="b", task="asr", text=TEXTS[1], latents=torch.randn(24, 16, generator=gen)),
             dict(id="c", task="tts", text=TEXTS[2], latents=torch.randn(24, 16, generator=gen))]
    batch = model.collate(items)
    latents, num_patches, is_tts = batch["latents"], batch["num_patches"], batch["is_tts"]
    for seed in range(5):
        spliced = model.spliced_tts_inputs(latents, num_patches, is_tts, torch.Generator().manual_seed(seed))
        assert torch.equal(spliced[1], latents[1])  # ASR reads its audio as it is
        for row in (0, 2):
            frames = int(num_patches[row]) * cfg.patch_size
            changed = (spliced[row] != latents[row]).any(-1).nonzero().flatten().tolist()
            start, span = changed[0], len(changed)
            assert changed == list(range(start, start + span)) and start >= 1  # one stretch, never the first frame
            assert 0.1 * frames - 1 <= span <= 0.3 * frames and start + span <= frames
            sources = [s for s in range(frames - span + 1) if abs(s - start) >= span
                       and torch.equal(spliced[row, start:start + span], latents[row, s:s + span])]
            assert sources  # another place of the same utterance
    cfg.flow.history_splice_share = 0.0
    assert torch.equal(model.spliced_tts_inputs(latents, num_patches, is_tts), latents)
    # training reads the spliced audio, the targets stay true; evaluation reads the truth
    cfg.flow.history_splice_share = 1.0
    model.train()
    torch.manual_seed(0)
    assert torch.isfinite(model(batch)["loss"])
    seen = []
    handle = model.patch_encoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].clone()))
    try:
        model.eval()
        with torch.no_grad():
            model(batch)
        model.train()
        with torch.no_grad():
            model(batch)
    finally:
        handle.remove()
    assert not torch.equal(seen[0], seen[1])  # the patch encoder reads the spliced audio in training only


def test_history_splice_share_is_checked(tmp_path):
    cfg = tiny_config()
    cfg.flow.history_splice_share = 1.5
    with pytest.raises(ValueError, match="history_splice_share"):
        build_tiny_model(TEXTS, tmp_path, cfg)
