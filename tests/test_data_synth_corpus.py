"""The built-in synthetic corpus: 48 kHz audio from several Debian voices, held-out sentences and voices, manifests."""
from __future__ import annotations

import json

import numpy as np
import soundfile as sf

from data_prep.manifest import read_manifest
from data_prep.sentences import VOCABULARIES, SentenceGenerator
from data_prep.synth_corpus import PRESETS, CorpusConfig, build_corpus, main, plan, same_config


def test_sentence_generator_is_varied_distinct_and_reproducible():
    sentences = SentenceGenerator(7).sample(2000)
    assert len(set(sentences)) == 2000 and sentences == SentenceGenerator(7).sample(2000)
    assert sentences[:50] != SentenceGenerator(8).sample(50)
    words = {w.strip(".,?!").lower() for s in sentences for w in s.split()}
    assert len(words) > 400
    assert {s[-1] for s in sentences} == {".", "?"} and all(not any(c.isdigit() for c in s) for s in sentences)
    assert all(4 <= len(s.split()) <= 24 and s[0].isupper() for s in sentences)


def test_large_vocabulary_reads_many_more_words_and_leaves_the_base_corpus_unchanged():
    base = SentenceGenerator(7).sample(2000)
    assert SentenceGenerator(7, "base").sample(2000) == base  # the default is the base vocabulary
    large = SentenceGenerator(7, "large").sample(2000)
    assert len(set(large)) == 2000 and large == SentenceGenerator(7, "large").sample(2000)
    words = lambda texts: {w.strip(".,?!").lower() for s in texts for w in s.split()}
    assert len(words(large)) > 2 * len(words(base))
    assert words(large) - VOCABULARIES["base"].words() and words(large) <= VOCABULARIES["large"].words() | {
        "a", "an", "the", "some", "those", "these", "that", "this", "her", "his", "our", "was", "by", "there", "were",
        "did", "will", "could", "should", "why", "where", "when", "please", "do", "not", "try", "to", "remember",
        "never", "after", "before", "because", "if", "while"}
    assert all(not any(c.isdigit() for c in s) and 4 <= len(s.split()) <= 24 for s in large)
    try:
        SentenceGenerator(7, "huge")
        raise AssertionError("an unknown vocabulary must be refused")
    except ValueError as err:
        assert "huge" in str(err)
    # a corpus.json written before the vocabulary setting existed is the base corpus, not another configuration
    saved = {k: v for k, v in CorpusConfig().__dict__.items() if k != "vocabulary"}
    assert same_config(saved, CorpusConfig()) and not same_config(saved, CorpusConfig(vocabulary="large"))
    plan_large = plan(CorpusConfig(**{**PRESETS["tiny"].__dict__, "vocabulary": "large"}))
    assert plan_large["train"] != plan(PRESETS["tiny"])["train"]


def test_default_plan_holds_out_sentences_and_voices_and_is_a_few_hours():
    cfg = PRESETS["default"]
    splits = plan(cfg)
    train_texts = {text for _, _, text in splits["train"]}
    test_texts = {text for split in ("test_seen_voice", "test_unseen_voice") for _, _, text in splits[split]}
    assert not train_texts & test_texts
    assert not {v for v, _, _ in splits["train"]} & {v for v, _, _ in splits["test_unseen_voice"]}
    assert len({v for v, _, _ in splits["train"]}) >= 6 and {"flite", "festival", "espeak"} <= {
        v.split("_")[0] for v, _, _ in splits["train"]}
    words = sum(len(text.split()) for _, _, text in splits["train"])
    assert 2.0 < words / 2.9 / 3600 < 6.0  # at about 2.9 words per second of speech: a few hours


def test_tiny_corpus_is_rendered_at_48k_with_consistent_manifests(tmp_path):
    cfg = CorpusConfig(train_voices=["flite_slt", "espeak_us_f3", "festival_kal"], heldout_voices=["flite_rms"],
                       train_utterances_per_voice=2, test_utterances_per_voice=1, train_sentence_pool=4,
                       test_sentence_pool=2, max_words=6)
    summary = build_corpus(tmp_path, cfg, progress=False)
    assert summary["splits"]["train"]["utterances"] == 6 and summary["splits"]["test_unseen_voice"]["utterances"] == 2
    train = read_manifest(tmp_path / "train.jsonl")
    assert {r.speaker for r in train} == {"flite_slt", "espeak_us_f3", "festival_kal"}
    for record in train + read_manifest(tmp_path / "test_unseen_voice.jsonl"):
        audio, sr = sf.read(record.audio)
        assert sr == 48000 and audio.ndim == 1 and abs(len(audio) / sr - record.duration) < 1e-3
        assert np.abs(audio).max() > 0.05  # real speech, not silence
    # voices really differ: their long-term spectra are not the same
    spectra = {}
    for record in train:
        audio, _ = sf.read(record.audio)
        spectra.setdefault(record.speaker, np.abs(np.fft.rfft(audio[:48000], 48000))[:8000])
    slt, espeak = spectra["flite_slt"], spectra["espeak_us_f3"]
    assert np.corrcoef(slt, espeak)[0, 1] < 0.9
    meta = (tmp_path / "seed_tts_eval" / "meta.lst").read_text().splitlines()
    assert len(meta) == 1 and len(meta[0].split("|")) == 5
    utt, prompt_text, prompt_wav, target_text, gt_wav = meta[0].split("|")
    assert (tmp_path / "seed_tts_eval" / prompt_wav).is_file() and (tmp_path / "seed_tts_eval" / gt_wav).is_file()
    # a rerun with the same settings reuses everything; the summary records the text source
    assert build_corpus(tmp_path, cfg, progress=False) == summary
    assert "SentenceGenerator" in json.loads((tmp_path / "corpus.json").read_text())["text_source"]


def test_cli_tiny_preset(tmp_path, capsys):
    main(["--out", str(tmp_path), "--preset", "tiny", "--workers", "2"])
    assert json.loads(capsys.readouterr().out)["train"]["utterances"] == 12
    assert len(read_manifest(tmp_path / "test_seen_voice.jsonl")) == 6
