"""Characters outside a sentencepiece model's pieces: refused until the unified model trains on them (byte-fallback
pieces), then accepted; the trainer records them from its corpus and keeps those of its warm-start model."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from safetensors.torch import save_file

from holitok_slm.text_tokenizer import TextTokenizer, train_sentencepiece
from holitok_slm.train.model_setup import note_trained_characters

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "then the rain came down"] * 20


class Store:  # the two LatentStore methods corpus_texts reads
    def __init__(self, texts):
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def meta(self, i):
        return {"text": self.texts[i]}


def _tokenizer(tmp_path) -> TextTokenizer:
    return train_sentencepiece(TEXTS, tmp_path / "spm" / "spm.model", vocab_size=60)


def test_trained_fallback_characters_are_accepted_and_survive_save_and_load(tmp_path):
    tokenizer = _tokenizer(tmp_path)
    assert tokenizer.unknown_characters("Kevin's cat") == ["K", "v", "'"]
    assert tokenizer.note_trained_characters(["Kevin ran", "the cat"]) == {"K", "v"}
    assert tokenizer.unknown_characters("Kevin's cat") == ["'"]
    assert tokenizer.fallback_characters("Kevin's cat") == ["K", "v", "'"]  # still byte pieces, now known ones
    tokenizer.save(tmp_path / "saved")
    again = TextTokenizer.load(tmp_path / "saved")
    assert again.trained_fallback_characters == {"K", "v"} and again.unknown_characters("Kevin's") == ["'"]


def test_trainer_records_its_corpus_characters_and_keeps_the_warm_start_model_s(tmp_path):
    start = _tokenizer(tmp_path)
    start.note_trained_characters(["Zoe"])
    start.save(tmp_path / "init" / "text_tokenizer")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "init" / "model.safetensors"))
    model = SimpleNamespace(text_tokenizer=_tokenizer(tmp_path))
    logged = []
    note_trained_characters(model, [Store(["Kevin ran"]), Store(TEXTS)], tmp_path / "init", logged.append)
    assert model.text_tokenizer.trained_fallback_characters == {"K", "v", "Z"}
    assert "K v" in logged[0] and "Z" not in logged[0]  # the warm start's characters are not new
    fresh = SimpleNamespace(text_tokenizer=_tokenizer(tmp_path))
    note_trained_characters(fresh, [Store(TEXTS)], None, logged.append)
    assert fresh.text_tokenizer.trained_fallback_characters == frozenset() and len(logged) == 1
