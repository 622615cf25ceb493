"""The weights the repository ships (weights/demo): intact against their manifest, loadable, and still doing what the
manifest's report says on speech they never saw. A regression guard with loose bounds, not the judge (eval.report)."""
from __future__ import annotations

import json

import pytest
import torch

from data_prep.sentences import SentenceGenerator
from data_prep.synth_corpus import VOICES, render
from demo.release import DEFAULT_RELEASE, verify_release
from eval.asr_wer import score

# Loose floors under what the shipped report measured (docs/demo.md), above what an untrained model scores:
# resynthesis STOI 0.79-0.82 measured (untrained ~0.55); the stop head ended 96-100 % of the report's TTS utterances.
MIN_RESYNTHESIS_STOI = 0.7
MIN_EOS_RATE = 0.5
# The shipped ASR reads the audio (report: 16.8 % WER on training voices; 6.3 % on these four fresh flite_rms
# sentences when shipped); a model that writes only its text prior scores ~95 %.
MAX_ASR_WER = 0.4


@pytest.fixture(scope="module")
def shipped():
    from holitok_slm.infer.pipeline import SpeechPipeline

    manifest = verify_release(DEFAULT_RELEASE)
    pipeline = SpeechPipeline.from_pretrained(DEFAULT_RELEASE / "unified", DEFAULT_RELEASE / "tokenizer")
    return manifest, pipeline


def test_manifest_names_its_command_commit_steps_and_report(shipped):
    manifest, pipeline = shipped
    assert manifest["command"].startswith("python -m demo.pipeline")
    assert len(manifest["commit"]) == 40 and manifest["steps"]["unified"] > 0
    assert {"seen", "unseen"} <= set(manifest["quality"]["splits"])
    assert pipeline.codec.latent_dim == pipeline.model.config.latent_dim
    total = sum((DEFAULT_RELEASE / name).stat().st_size for name in manifest["files"])
    assert total <= 50e6, f"shipped weights take {total / 1e6:.1f} MB (50 MB at most)"


@pytest.fixture(scope="module")
def fresh_speech(tmp_path_factory):
    """New sentences from the corpus grammar (another seed), spoken by a training voice."""
    root = tmp_path_factory.mktemp("fresh_speech")
    sentences = SentenceGenerator(seed=20261201).sample(4, max_words=10)
    items = []
    for i, text in enumerate(sentences):
        path = root / f"{i}.wav"
        render(VOICES["flite_rms"], text, path)
        items.append((path, text))
    return items


def test_shipped_tokenizer_resynthesises_new_sentences_intelligibly(shipped, fresh_speech):
    from eval.audio_metrics import stoi_score
    from holitok.audio import load_audio

    _, pipeline = shipped
    scores = []
    for path, _ in fresh_speech:
        audio = load_audio(path)
        resynth = pipeline.codec.decode(pipeline.codec.encode(audio[None, None]))[0, 0, : audio.shape[-1]]
        scores.append(stoi_score(audio, resynth, pipeline.sample_rate))
    assert sum(scores) / len(scores) >= MIN_RESYNTHESIS_STOI, scores


def test_shipped_asr_writes_sentences(shipped, fresh_speech):
    _, pipeline = shipped
    texts = [t for _, t in fresh_speech]
    hyps = pipeline.asr([str(p) for p, _ in fresh_speech])
    assert all(len(h.split()) >= 3 for h in hyps), hyps
    assert score(texts, hyps).corpus_wer <= MAX_ASR_WER, list(zip(texts, hyps))


def test_shipped_tts_clones_a_held_out_voice_and_stops(shipped, fresh_speech):
    _, pipeline = shipped
    examples = json.loads((DEFAULT_RELEASE / "examples.json").read_text())
    example = examples[0]
    results = pipeline.synthesize([t for _, t in fresh_speech], [str(DEFAULT_RELEASE / example["prompt_wav"])] * 4,
                                  [example["prompt_text"]] * 4, seed=0)
    for (wav, result), (_, text) in zip(results, fresh_speech):
        assert torch.isfinite(wav).all() and wav.abs().max() > 1e-3, "silent or broken audio"
        low, high = result.length_bounds
        assert low * 7680 <= wav.numel() <= high * 7680          # 4 frames x 1920 samples per patch
    assert sum(r.stopped_by_eos for _, r in results) / len(results) >= MIN_EOS_RATE
