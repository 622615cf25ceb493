"""Sequence layout (holitok_slm.layout): training batches and TTS/ASR inference prefixes agree position by position;
the whole-patch rule and the latent checks are the layout's, whichever front door the latents come through."""
from pathlib import Path

import pytest
import torch

from holitok_slm import layout
from holitok_slm.infer import tts
from holitok_slm.infer.asr import transcribe_latents
from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents
from holitok_slm.text_tokenizer import AUDIO_END, AUDIO_PAD, AUDIO_START, TEXT_END
from holitok_slm.tiny import build_tiny_model, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


@pytest.fixture(scope="module", params=["patch", "semantic"])  # Base and Unite input paths
def model(request, tmp_path_factory):
    torch.manual_seed(0)
    model = build_tiny_model(TEXTS, tmp_path_factory.mktemp("tok"), tiny_config(request.param)).eval()
    model.latent_bias.fill_(0.3), model.latent_scale.fill_(0.7)  # normalisation must be applied the same way
    return model


def _latents(frames, seed=0):
    return torch.randn(frames, 16, generator=torch.Generator().manual_seed(seed))


def _training_embeds(model, batch):
    with torch.no_grad():
        return model.embed_inputs(batch["input_ids"], batch["latents"], batch["frame_mask"], batch["audio_offset"],
                                  batch["num_patches"])


def test_tts_prefix_is_the_training_sequence_cut_where_the_prompt_ends(model):
    tok, patch = model.text_tokenizer, model.config.patch_size
    audio = _latents(10)  # 2 whole patches + a partial one, dropped by both
    batch = model.collate([dict(id="u", task="tts", text="a dog ran in the park", latents=audio)])
    request = TTSRequest("in the park", prompt_latents=audio, prompt_text="a dog ran", instruction=None)
    item = layout.tts_request_layout(tok, model.config, request.text, request.prompt_latents, request.prompt_text)

    assert item.ids == batch["input_ids"][0].tolist()  # token ids, audio positions included
    assert (item.audio_offset, item.num_patches) == (batch["audio_offset"][0].item(), batch["num_patches"][0].item())
    assert item.num_patches == 2 and batch["frame_mask"][0].sum() == 2 * patch
    assert [item.ids[i] for i in item.audio_positions] == [tok.id(AUDIO_PAD)] * 2
    assert item.ids[item.audio_offset - 1] == tok.id(AUDIO_START)
    # The stop head is trained from <|audio_start|> through the last patch: the prefix ends at its last label.
    stop = batch["stop_labels"][0]
    assert (stop >= 0).nonzero().flatten().tolist() == list(range(item.audio_offset - 1, len(item.ids)))

    # What TTS generation starts from (tts._prepare goes through layout.tts_prefix) embeds like training.
    prepared = tts._prepare(model, [request], TTSOptions.from_model(model, max_patches=2))
    embeds = _training_embeds(model, batch)[0]
    assert prepared.item_embeds[0].shape == embeds.shape
    text_positions = list(range(item.audio_offset))
    assert torch.equal(prepared.item_embeds[0][text_positions], embeds[text_positions])
    assert torch.allclose(prepared.item_embeds[0], embeds, atol=1e-5)  # Unite primes its cache step by step
    # The DiT history of the first generated patch is the last prompt patch, normalised as in training.
    assert torch.allclose(prepared.history[0], model.normalize_latents(audio[patch:2 * patch]))


def test_tts_prefix_without_prompt_and_with_instruction(model):
    tok = model.text_tokenizer
    batch = model.collate([dict(id="u", task="tts", text="hello world", instruction="whisper", latents=_latents(8))])
    item = layout.tts_request_layout(tok, model.config, "hello world", instruction="whisper")
    assert item.num_patches == 0 and item.ids == batch["input_ids"][0, :item.audio_offset].tolist()
    assert item.audio_offset == batch["audio_offset"][0].item()
    prepared = tts._prepare(model, [TTSRequest("hello world", instruction="whisper")], TTSOptions.from_model(model))
    assert torch.equal(prepared.item_embeds[0], _training_embeds(model, batch)[0, :item.audio_offset])
    assert torch.equal(prepared.history[0], torch.zeros_like(prepared.history[0]))


def test_asr_prefix_is_the_training_sequence_before_the_transcript(model):
    tok = model.text_tokenizer
    audio = _latents(7)  # ASR keeps every frame: 2 patches, the last one partial
    batch = model.collate([dict(id="u", task="asr", text="hello world", latents=audio)])
    item = layout.asr_layout(tok, model.config, audio)
    n = len(item.ids)
    assert item.ids == batch["input_ids"][0, :n].tolist()
    assert (item.audio_offset, item.num_patches) == (batch["audio_offset"][0].item(), batch["num_patches"][0].item())
    assert item.num_patches == 2 and batch["frame_mask"][0].sum() == 7
    assert item.ids[item.audio_offset - 1] == tok.id(AUDIO_START) and item.ids[-1] == tok.id(AUDIO_END)
    # The last prefix position (<|audio_end|>) carries the first transcript label; nothing before it does.
    labels = batch["text_labels"][0]
    assert (labels[:n - 1] == -100).all() and labels[n - 1] == tok.encode("hello world")[0]
    assert labels[labels != -100].tolist()[-1] == tok.id(TEXT_END)
    with torch.no_grad():
        prefix = layout.asr_prefix(model, item)
    assert torch.equal(prefix, _training_embeds(model, batch)[0, :n])


def test_whole_patch_rule(model):
    patch = model.config.patch_size
    assert layout.whole_patches(_latents(10), patch).shape[0] == 8
    assert layout.whole_patches(_latents(8), patch).shape[0] == 8
    # A training item shorter than one patch has nothing to cut to: it stays one (partial) patch.
    batch = model.collate([dict(id="u", task="tts", text="hello", latents=_latents(3))])
    assert batch["num_patches"].tolist() == [1] and batch["frame_mask"].sum() == 3
    # A voice prompt shorter than one patch is refused, by the layout.
    with pytest.raises(ValueError, match="shorter than one patch") as info:
        generate_latents(model, [TTSRequest("hi", prompt_latents=_latents(3), prompt_text="a")])
    assert _raised_in(info) == ("layout.py", "whole_patches")


def _raised_in(info) -> tuple[str, str]:
    tb = info.tb
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).name, tb.tb_frame.f_code.co_name


@pytest.mark.parametrize("bad, message", [
    (torch.full((8, 16), float("nan")), "contain NaN or inf"),
    (torch.zeros(8, 3), r"must be a \[T, 16\] tensor, got \(8, 3\)"),
    (torch.zeros(0, 16), "have no frames"),
    ([[0.0] * 16] * 8, "got list"),
])
def test_latent_checks_are_the_layouts_for_training_tts_and_asr(model, bad, message):
    calls = {
        "item u7: latents": lambda: model.collate([dict(id="u7", task="tts", text="hi", latents=bad)]),
        "item u8: latents": lambda: model.collate([dict(id="u8", task="asr", text="hi", latents=bad)]),
        "prompt_latents": lambda: generate_latents(model, [TTSRequest("hi", prompt_latents=bad, prompt_text="a")]),
        "ASR latents": lambda: transcribe_latents(model, [bad]),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert str(info.value).startswith(what)
        assert _raised_in(info) == ("layout.py", "check_latents")


def test_a_prompted_training_item_is_laid_out_as_cloning_reads_another_recording(model):
    """data.tts_prompt_share: an item that follows another utterance of its speaker is the sequence zero-shot cloning
    continues (prompt transcript + text, the prompt's whole patches, then the item's audio), cut where the prompt
    ends; the forced alignment's points go on after the prompt's, shifted to where the item's text starts."""
    tok, cfg, patch = model.text_tokenizer, model.config, model.config.patch_size
    prompt_audio, audio = _latents(10, seed=1), _latents(13, seed=2)  # partial last patches: 2 + 3 whole patches
    prompt_points, points = torch.linspace(0, 9, 10), torch.linspace(0, 11, 13)
    prompt = dict(id="p", task="tts", text="a dog ran", latents=prompt_audio, text_points=prompt_points)
    item = dict(id="u", task="tts", text="in the park", latents=audio, text_points=points, prompt=prompt)
    joined = layout.training_layout(tok, cfg, item)
    request = layout.tts_request_layout(tok, cfg, "in the park", prompt_audio, "a dog ran")
    assert joined.ids[:len(request.ids)] == request.ids  # the inference layout is the training item cut at the prompt
    assert joined.num_patches == request.num_patches + 3 and joined.spoken == tok.encode("a dog ran in the park")
    assert torch.equal(joined.latents, torch.cat([prompt_audio[:2 * patch], audio[:3 * patch]]))
    offset = len(tok.encode("a dog ran in the park")) - len(tok.encode("in the park"))
    assert offset == len(tok.encode("a dog ran"))  # this tokenizer splits at the space
    assert torch.equal(joined.points[:2 * patch], prompt_points[:2 * patch])
    assert torch.allclose(joined.points[2 * patch:], points + offset)
    # Without the prompt, the same item is its own utterance; a prompt under one patch is left out.
    alone = layout.training_layout(tok, cfg, {k: v for k, v in item.items() if k != "prompt"})
    assert alone.ids == tts.layout.tts_layout(tok, cfg, "in the park", audio[:3 * patch]).ids
    short = dict(prompt, latents=prompt_audio[:patch - 1])
    assert layout.training_layout(tok, cfg, dict(item, prompt=short)).ids == alone.ids
    # An aligned item needs an aligned prompt.
    with pytest.raises(ValueError, match="no forced alignment"):
        layout.training_layout(tok, cfg, dict(item, prompt={k: v for k, v in prompt.items() if k != "text_points"}))
