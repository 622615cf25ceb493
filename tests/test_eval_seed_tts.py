"""Seed-TTS-Eval on the smoke model: the real model generates, real judges score (its own ASR, the melstats
fingerprint); the aggregates follow the protocol (mean of per-utterance WERs, SIM against the prompt wav)."""
from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import soundfile as sf

from demo.smoke import smoke_outputs
from eval.asr_wer import normalize_text, wer
from eval.audio_metrics import cosine_similarity
from eval.judges import MelStatsJudge, SelfASRJudge
from eval.seed_tts import format_summary, read_meta, run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from holitok_slm.infer.pipeline import SpeechPipeline

    smoke = smoke_outputs(tmp_path_factory.getbasetemp())
    pipeline = SpeechPipeline.from_pretrained(smoke.model, smoke.tokenizer)
    items, problems = read_meta(smoke.corpus / "seed_tts_eval" / "meta.lst")
    return smoke, pipeline, items, problems


@pytest.mark.slow
def test_protocol_aggregates_over_seeds(setup, tmp_path):
    smoke, pipeline, items, problems = setup
    assert problems == [] and len(items) == 2
    asr, speaker = SelfASRJudge(pipeline), MelStatsJudge()
    summary = run(items, tmp_path, asr, speaker, pipeline, seeds=(0, 1), options={"steps": 2, "max_patches": 6}, progress=False)
    assert json.loads((tmp_path / "results.json").read_text()) == summary
    per_seed_wer = []
    for seed in ("0", "1"):
        result = summary["per_seed"][seed]
        assert result["missing"] == [] and result["generation_failures"] == []
        for row, item in zip(result["utterances"], items):
            wav, rate = sf.read(tmp_path / f"seed-{seed}" / "wavs" / f"{item.utt}.wav", dtype="float32")
            assert rate == 48000 and wav.size == round(row["seconds"] * rate)
            # the judge's transcript is the model's ASR of that very file, scored after normalisation
            assert row["hypothesis"] == pipeline.asr(wav, sample_rate=rate)
            assert row["wer"] == pytest.approx(wer(item.target_text, row["hypothesis"]))
            # SIM is against the prompt wav, not the ground truth
            prompt, prompt_rate = sf.read(item.prompt_wav, dtype="float32")
            expected = cosine_similarity(speaker.embed(wav, rate), speaker.embed(prompt, prompt_rate))
            assert row["sim"] == pytest.approx(expected, abs=1e-6)
        assert result["wer"] == pytest.approx(statistics.fmean(r["wer"] for r in result["utterances"]))
        per_seed_wer.append(result["wer"])
    assert summary["wer"]["mean"] == pytest.approx(statistics.fmean(per_seed_wer))
    assert summary["wer"]["std"] == pytest.approx(statistics.pstdev(per_seed_wer))
    assert "WER:" in format_summary(summary) and "over 2 run(s)" in format_summary(summary)


@pytest.mark.slow
def test_generation_resumes_and_missing_files_are_reported(setup, tmp_path):
    smoke, pipeline, items, _ = setup
    first = run(items, tmp_path, None, None, pipeline, seeds=(0,), options={"steps": 2, "max_patches": 6}, progress=False)
    wav_dir = tmp_path / "seed-0" / "wavs"
    stamps = {p.name: p.stat().st_mtime_ns for p in wav_dir.glob("*.wav")}
    assert len(stamps) == len(items) and first["wer"]["mean"] is None  # no judge: nothing scored, said so
    assert "WER: not computed" in format_summary(first)
    run(items, tmp_path, None, None, pipeline, seeds=(0,), options={"steps": 2, "max_patches": 6}, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in wav_dir.glob("*.wav")} == stamps  # kept, not regenerated
    # scoring a folder where one file is missing names it instead of skipping it silently
    (wav_dir / f"{items[0].utt}.wav").unlink()
    scored = run(items, tmp_path / "rescore", SelfASRJudge(pipeline), None, generated=wav_dir, progress=False)
    assert scored["per_seed"]["given"]["missing"] == [items[0].utt]
    assert scored["per_seed"]["given"]["scored"] == len(items) - 1
    assert "1 generated files missing" in format_summary(scored)


def test_meta_lines_that_cannot_be_used_are_reported(tmp_path):
    sf.write(tmp_path / "p.wav", np.zeros(4800, np.float32), 48000)
    (tmp_path / "meta.lst").write_text("u1|prompt words|p.wav|Target, words!\n"
                                       "u2|only three|fields\n"
                                       "u3|prompt|missing.wav|target\n")
    items, problems = read_meta(tmp_path / "meta.lst")
    assert [i.utt for i in items] == ["u1"]
    assert items[0].prompt_wav == str((tmp_path / "p.wav").resolve())
    assert normalize_text(items[0].target_text) == "target words"
    assert [p[0] for p in problems] == ["meta.lst:2", "u3"]
