"""Evaluation metrics on constructed cases: WER/CER and the normaliser, PESQ/STOI/mel distance, the reconstruction
report (with a corrupt file in the manifest), and the crude melstats speaker judge."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.asr_wer import cer, missed_by_position, normalize_text, score, wer
from eval.audio_metrics import PESQ_MAX_NB, PESQ_MAX_WB, mel_distance, pesq_score, stoi_score

RATE = 48000


def speech_like(seconds: float = 2.0, seed: int = 0, f0: float = 140.0) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope and formant-ish colouring: PESQ/STOI need speech-like input."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = sum(np.sin(k * phase) / k * (1 + 2 * (abs(k * f0 - 700) < 300)) for k in range(1, 30))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5
    signal = voice * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(x.size).astype(np.float32)
    noise *= np.sqrt(np.mean(x ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return x + noise


# ---- WER / CER ---------------------------------------------------------------------------------------------------
def test_normaliser_follows_the_seed_tts_conventions():
    assert normalize_text("Hello, World!  It's 5 o'clock.") == "hello world it's 5 o'clock"
    assert normalize_text("'Quoted' words - and dashes") == "quoted words and dashes"
    assert normalize_text("It's", keep_apostrophe=False) == "it s"
    assert normalize_text("你好，世界！", "zh") == "你 好 世 界"
    assert normalize_text("Ｆｕｌｌ－width") == "full width"  # NFKC folds full-width forms


def test_wer_of_known_strings():
    assert wer("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert wer("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(1 / 6)       # 1 substitution
    assert wer("the cat sat", "the cat") == pytest.approx(1 / 3)                               # 1 deletion
    assert wer("the cat", "the big fat cat") == pytest.approx(2 / 2)                           # 2 insertions
    assert wer("The CAT, sat.", "the cat sat") == 0.0                                          # normalised first
    assert wer("one two three", "") == 1.0                                                     # nothing recognised
    assert cer("abcd", "abed") == pytest.approx(1 / 4)
    assert wer("今天天气好", "今天天汽好", "zh") == pytest.approx(1 / 5)


def test_missed_words_are_counted_in_the_third_of_the_sentence_they_belong_to():
    refs = ["one two three four five six", "alpha beta gamma"]
    # first utterance: "one" substituted, "two" deleted (first third), "six" substituted (last third), an insertion
    # counts nowhere; second: "gamma" deleted (last third); an empty hypothesis misses every word
    hyps = ["won three four five sex extra", "alpha beta"]
    assert missed_by_position(refs, hyps) == [pytest.approx(2 / 3), 0.0, pytest.approx(2 / 3)]
    assert missed_by_position(refs, ["", ""]) == [1.0, 1.0, 1.0]
    assert missed_by_position(["a b"], ["a b"], parts=4) == [0.0, None, 0.0, None]  # a stretch with no word: None


def test_macro_and_corpus_wer_differ_as_defined():
    report = score(["a b", "c d e f g h i j"], ["a x", "c d e f g h i j"])
    assert report.macro_wer == pytest.approx((1 / 2 + 0 / 8) / 2)   # Seed-TTS-Eval: mean of per-utterance WERs
    assert report.corpus_wer == pytest.approx(1 / 10)                # total edits / total words
    assert (report.substitutions, report.deletions, report.insertions) == (1, 0, 0)
    assert [u["wer"] for u in report.utterances] == [0.5, 0.0]


def test_unscorable_input_is_refused():
    with pytest.raises(ValueError, match="empty after normalisation"):
        wer("?!", "anything")
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score(["a", "b"], ["a"])


def test_wer_cli_scores_id_matched_files(tmp_path, capsys):
    from eval.asr_wer import main

    (tmp_path / "ref.txt").write_text("u1\tthe cat sat\nu2\tgood morning\n")
    (tmp_path / "hyp.txt").write_text("u2|good morning\nu1|the cat sad\n")
    assert main(["--ref", str(tmp_path / "ref.txt"), "--hyp", str(tmp_path / "hyp.txt"),
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["macro_wer"] == pytest.approx((1 / 3 + 0) / 2)
    assert "WER 16.67% (mean per utterance)" in capsys.readouterr().out


# ---- signal metrics ----------------------------------------------------------------------------------------------
def test_pesq_of_identical_signals_is_the_maximum_and_falls_with_noise():
    clean = speech_like()
    assert pesq_score(clean, clean, RATE, "wb") == pytest.approx(PESQ_MAX_WB, abs=0.01)
    assert pesq_score(clean, clean, RATE, "nb") == pytest.approx(PESQ_MAX_NB, abs=0.01)
    mild, heavy = pesq_score(clean, with_noise(clean, 20), RATE, "wb"), pesq_score(clean, with_noise(clean, 0), RATE, "wb")
    assert PESQ_MAX_WB - 0.5 > mild > heavy


def test_pesq_on_silence_is_a_clear_error():
    with pytest.raises(ValueError, match="silent"):
        pesq_score(np.zeros(RATE, np.float32), np.zeros(RATE, np.float32), RATE, "wb")


def test_stoi_and_mel_distance_rank_degradations():
    clean = speech_like()
    assert stoi_score(clean, clean, RATE) == pytest.approx(1.0, abs=1e-6)
    assert stoi_score(clean, with_noise(clean, 20), RATE) > stoi_score(clean, with_noise(clean, -5), RATE)
    assert mel_distance(clean, clean, RATE) == 0.0
    assert 0 < mel_distance(clean, with_noise(clean, 20), RATE) < mel_distance(clean, with_noise(clean, 0), RATE)
    # a codec that pads to whole frames is compared on the common length
    padded = np.concatenate([clean, np.zeros(1000, np.float32)])
    assert mel_distance(clean, padded, RATE) == 0.0


# ---- reconstruction report ---------------------------------------------------------------------------------------
def test_reconstruction_report_scores_every_readable_item_and_names_the_rest(tmp_path):
    from data_prep.manifest import ManifestRecord, write_manifest
    from eval.reconstruction import evaluate_manifest, format_summary, reconstruct
    from holitok import HoliTok, get_preset_config

    codec = HoliTok(get_preset_config("tiny")).eval()
    for name, seed in (("a", 0), ("b", 1)):
        sf.write(tmp_path / f"{name}.wav", speech_like(1.0, seed), RATE)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    records = [ManifestRecord(id=n, audio=str(tmp_path / f"{n}.wav"), duration=1.0, text="x", language="en")
               for n in ("a", "b", "broken")]
    write_manifest(records, tmp_path / "m.jsonl", relative_to=tmp_path)
    report = evaluate_manifest(tmp_path / "m.jsonl", codec, save_audio_dir=tmp_path / "resynth", progress=False)
    assert report["scored"] == 2 and [f["id"] for f in report["failed"]] == ["broken"]
    row = report["utterances"][0]
    # the report's numbers are exactly the metrics of the codec's own resynthesis
    from holitok.audio import load_audio

    audio = load_audio(tmp_path / "a.wav")  # 16-bit file: compare with what was actually stored
    resynth = reconstruct(codec, audio)
    assert row["mel_distance"] == pytest.approx(mel_distance(audio, resynth, RATE), rel=1e-5)
    assert row["stoi"] == pytest.approx(stoi_score(audio, resynth, RATE), rel=1e-5)
    assert report["mean"]["mel_distance"] == pytest.approx(
        np.mean([u["mel_distance"] for u in report["utterances"]]))
    assert sf.info(tmp_path / "resynth" / "a.wav").frames == RATE
    assert "failed broken" in format_summary(report)


def test_reconstruction_table_has_every_table1_column_from_the_judges_given(tmp_path):
    """Table 1 layout: CR/TPS from equation 13, WER from an ASR judge against the manifest text, SPKSIM from a speaker
    judge, UTMOS from a TorchScript file; a judge not given is n/a, never a number."""
    from data_prep.manifest import ManifestRecord, write_manifest
    from eval.judges import MelStatsJudge
    from eval.reconstruction import (UTMOSJudge, compression, evaluate_manifest, make_emotion_judge,
                                     make_utmos_judge, table_markdown)
    from eval.audio_metrics import MissingJudgeError
    from holitok import HoliTok, get_preset_config

    codec = HoliTok(get_preset_config("tiny")).eval()
    comp = compression(codec)
    assert comp["tps"] == codec.sample_rate / codec.hop_size
    assert comp["cr"] == pytest.approx(codec.sample_rate * 16 / (comp["tps"] * codec.latent_dim * 32))
    # the paper's HoliTok geometry: 48 kHz, 25 Hz x 128 -> CR 7.5 (Table 1)
    paper = type("Geometry", (), {"sample_rate": 48000, "hop_size": 1920, "latent_dim": 128})()
    assert compression(paper)["cr"] == pytest.approx(7.5) and compression(paper)["tps"] == 25

    for name, seed in (("a", 0), ("b", 1)):
        sf.write(tmp_path / f"{name}.wav", speech_like(1.0, seed), RATE)
    records = [ManifestRecord(id=n, audio=str(tmp_path / f"{n}.wav"), duration=1.0, text="one two three four",
                              language="en") for n in ("a", "b")]
    write_manifest(records, tmp_path / "m.jsonl", relative_to=tmp_path)

    from holitok.audio import load_audio

    originals = [load_audio(tmp_path / f"{n}.wav").numpy() for n in ("a", "b")]

    class FixedASR:  # an external ASR stand-in: the original is heard right, the resynthesis loses one word
        name = "fixed"

        def transcribe(self, audio, sample_rate):
            heard_right = any(len(o) == len(audio) and np.array_equal(o, np.asarray(audio)) for o in originals)
            return "one two three four" if heard_right else "one two three"

    class Loudness(torch.nn.Module):  # a TorchScript "MOS predictor": 1 + 10 x mean |wav|
        def forward(self, wav):
            return 1.0 + 10.0 * wav.abs().mean(dim=-1)

    torch.jit.save(torch.jit.script(Loudness()), str(tmp_path / "utmos.pt"))
    utmos = make_utmos_judge(f"torchscript:{tmp_path / 'utmos.pt'}")
    assert isinstance(utmos, UTMOSJudge)

    report = evaluate_manifest(tmp_path / "m.jsonl", codec, progress=False, asr_judge=FixedASR(),
                               sim_judge=MelStatsJudge(), utmos_judge=utmos)
    mean = report["mean"]
    assert mean["wer"] == pytest.approx(0.25) and mean["wer_gt"] == 0.0
    assert -1.0 <= mean["spksim"] <= 1.0 and mean["spksim_count"] == 2
    assert mean["emosim"] is None  # no emotion judge: left out, not invented
    row = report["utterances"][0]
    assert row["utmos_gt"] == pytest.approx(utmos.score(originals[0], RATE), rel=1e-5)
    assert row["utmos"] != row["utmos_gt"]  # the resynthesis is scored, not the original twice
    table = table_markdown(report, "tiny")
    header, rule, truth, model = table.splitlines()[:4]
    assert header == "| Model | CR | TPS | NB/WB PESQ | STOI | WER(%) | SPKSIM | EMOSIM | UTMOS |"
    assert truth.startswith("| Ground Truth | 1.00 | - | - | - | 0.00 | 1.000 | n/a |")
    cells = [c.strip() for c in model.strip("|").split("|")]
    assert cells[0] == "tiny" and cells[1] == f"{comp['cr']:.2f}" and cells[5] == "25.00" and cells[7] == "n/a"
    with pytest.raises(MissingJudgeError, match="not found"):
        make_utmos_judge(f"torchscript:{tmp_path / 'missing.pt'}")
    (tmp_path / "pickle.pt").write_bytes(b"not a torchscript archive")
    with pytest.raises(MissingJudgeError, match="not a TorchScript file"):
        make_utmos_judge(f"torchscript:{tmp_path / 'pickle.pt'}")
    with pytest.raises(MissingJudgeError, match="FunASR|not found"):  # FunASR absent, or present without the folder
        make_emotion_judge(f"emotion2vec:{tmp_path / 'no_model'}")


# ---- speaker judges ----------------------------------------------------------------------------------------------
def test_melstats_judge_separates_voices(tmp_path):
    """Same synthetic voice, other sentence -> higher similarity than another voice, same sentence."""
    from data_prep.synth_corpus import VOICES, render
    from eval.audio_metrics import cosine_similarity
    from eval.judges import MelStatsJudge

    paths = {}
    for voice, text in (("flite_slt", "The small dog ran home before dinner."),
                        ("flite_slt", "Seven green boxes stood near the river."),
                        ("espeak_us_f3", "The small dog ran home before dinner.")):
        path = tmp_path / f"{voice}-{len(paths)}.wav"
        render(VOICES[voice], text, path)
        paths[len(paths)] = path
    judge = MelStatsJudge()
    emb = [judge.embed(*sf.read(paths[i], dtype="float32")) for i in range(3)]
    assert cosine_similarity(emb[0], emb[1]) > cosine_similarity(emb[0], emb[2])


def test_missing_judges_say_what_to_install():
    from eval.audio_metrics import MissingJudgeError
    from eval.judges import make_asr_judge, make_speaker_judge

    with pytest.raises(MissingJudgeError, match="faster-whisper|model.bin"):
        make_asr_judge("whisper:/nonexistent/whisper-base")
    try:
        judge = make_speaker_judge("resemblyzer")
    except MissingJudgeError as err:
        assert "pip install resemblyzer" in str(err)
    else:  # installed on this machine: then it must produce an embedding
        assert judge.embed(speech_like(), RATE).shape == (256,)
    with pytest.raises(ValueError, match="unknown speaker judge"):
        make_speaker_judge("ecapa")
    with pytest.raises(ValueError, match="needs the model under test"):
        make_asr_judge("self")


def test_asr_benchmark_mode_transcribes_a_manifest_in_batches_and_counts_unreadable_items(tiny_slm, tmp_path, capsys):
    """eval.asr_wer --manifest: the model's batched ASR equals its one-by-one ASR; an unreadable file is listed and
    scored as an empty hypothesis (all its words deleted); AISHELL-1 scores characters."""
    from data_prep.manifest import ManifestRecord, write_manifest
    from eval import asr_wer
    from holitok_slm.infer.pipeline import SpeechPipeline

    for name, seed, seconds in (("a", 0, 1.0), ("b", 1, 0.6), ("c", 2, 0.8)):
        sf.write(tmp_path / f"{name}.wav", speech_like(seconds, seed), RATE)
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    texts = {"a": "the quick brown fox", "b": "jumps over", "c": "the lazy dog", "broken": "never heard at all"}
    records = [ManifestRecord(id=k, audio=str(tmp_path / f"{k}.wav"), duration=1.0, text=v, language="en")
               for k, v in texts.items()]
    write_manifest(records, tmp_path / "m.jsonl", relative_to=tmp_path)
    pipeline = SpeechPipeline.from_pretrained(tiny_slm.model_dir, tiny_slm.tokenizer_dir)
    _, hyps, failures = asr_wer.transcribe_manifest(pipeline, tmp_path / "m.jsonl", batch_size=2, progress=False)
    assert [f["id"] for f in failures] == ["broken"] and hyps["broken"] == ""
    for name in ("a", "b", "c"):
        assert hyps[name] == pipeline.asr(str(tmp_path / f"{name}.wav"))  # batching changes nothing

    out = tmp_path / "r.json"
    assert asr_wer.main(["--manifest", str(tmp_path / "m.jsonl"), "--model", str(tiny_slm.model_dir), "--tokenizer",
                         str(tiny_slm.tokenizer_dir), "--benchmark", "librispeech", "--batch_size", "2",
                         "--json", str(out), "--hyp_out", str(tmp_path / "hyp.txt")]) == 0
    report = json.loads(out.read_text())
    assert report["num_utterances"] == 4 and report["unit"] == "word" and report["reference_tokens"] == 13
    assert report["deletions"] >= 4  # the unreadable item's four words
    assert report["failures"][0]["id"] == "broken" and "unreadable, scored as empty: broken" in capsys.readouterr().out
    assert asr_wer.read_transcripts(tmp_path / "hyp.txt").keys() == texts.keys()
    assert asr_wer.score(["甲乙 丙丁。"], ["甲乙丙"], language=asr_wer.BENCHMARKS["aishell1"]["language"]).unit == "char"
    with pytest.raises(SystemExit):
        asr_wer.main(["--manifest", str(tmp_path / "m.jsonl")])  # no model: refused
