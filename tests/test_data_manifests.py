"""Manifest builders on miniature copies of each corpus layout, skip reporting, and loading with `datasets`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.build_manifest import main as build_manifest_cli
from data_prep.corpora import aishell1, common_voice, emilia, librispeech, seed_tts_eval, wav_folder
from data_prep.manifest import ManifestRecord, load_manifest_dataset, read_manifest, write_manifest


def tone(path: Path, seconds: float, sr: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def test_librispeech_layout(tmp_path):
    chapter = tmp_path / "train-clean-100" / "103" / "1240"
    tone(chapter / "103-1240-0000.flac", 1.5)
    tone(chapter / "103-1240-0001.flac", 0.5)
    (chapter / "103-1240.trans.txt").write_text(
        "103-1240-0000 CHAPTER ONE MISSUS RACHEL\n103-1240-0001 WAS SURPRISED\n103-1240-0002 NO AUDIO HERE\n")
    records, skipped = librispeech(tmp_path)
    assert [(r.id, r.text, r.speaker, r.language, r.task) for r in records] == [
        ("103-1240-0000", "chapter one missus rachel", "103", "en", "asr"),
        ("103-1240-0001", "was surprised", "103", "en", "asr")]
    assert records[0].duration == pytest.approx(1.5)
    assert skipped[0][0] == "103-1240-0002" and skipped[0][1].startswith("missing audio")


def test_aishell1_layout(tmp_path):
    (tmp_path / "transcript").mkdir()
    (tmp_path / "transcript" / "aishell_transcript_v0.8.txt").write_text(
        "BAC009S0002W0122 而 对 楼市 成交\nBAC009S0002W0123 抑制 作用\n", encoding="utf-8")
    tone(tmp_path / "wav" / "train" / "S0002" / "BAC009S0002W0122.wav", 1.0)
    tone(tmp_path / "wav" / "train" / "S0002" / "BAC009S0002W0999.wav", 1.0)
    tone(tmp_path / "wav" / "test" / "S0900" / "BAC009S0002W0123.wav", 1.0)
    records, skipped = aishell1(tmp_path, split="train")
    assert [(r.id, r.text, r.speaker, r.language) for r in records] == [
        ("BAC009S0002W0122", "而对楼市成交", "S0002", "zh")]
    assert skipped == [("BAC009S0002W0999", "no transcript")]


def test_emilia_jsonl_and_per_utterance_json(tmp_path):
    batch = tmp_path / "EN" / "EN_B00000"
    tone(batch / "EN_B00000_S00000_W000000.wav", 2.0)
    tone(batch / "EN_B00000_S00000_W000001.wav", 1.0)
    rows = [{"id": "EN_B00000_S00000_W000000", "wav": "EN_B00000_S00000_W000000.wav", "text": " Hello there. ",
             "duration": 2.0, "speaker": "EN_B00000_S00000", "language": "en", "dnsmos": 3.4},
            {"id": "EN_B00000_S00000_W000001", "wav": "EN_B00000_S00000_W000001.wav", "text": "Low quality.",
             "duration": 1.0, "speaker": "EN_B00000_S00000", "language": "en", "dnsmos": 2.1}]
    (batch / "EN_B00000.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    tone(batch / "single.wav", 1.0)
    (batch / "single.json").write_text(json.dumps({"id": "single", "wav": "single.wav", "text": "One file.",
                                                    "duration": 1.0, "speaker": "S9", "language": "EN"}))
    records, skipped = emilia(tmp_path, min_dnsmos=3.0)
    assert [(r.id, r.text, r.task, r.language) for r in records] == [
        ("EN_B00000_S00000_W000000", "Hello there.", "tts", "en"), ("single", "One file.", "tts", "en")]
    assert skipped[0][0] == "EN_B00000_S00000_W000001" and "dnsmos" in skipped[0][1]


def test_common_voice_tsv(tmp_path):
    tone(tmp_path / "clips" / "common_voice_en_1.wav", 1.2)
    tone(tmp_path / "clips" / "common_voice_en_2.wav", 0.8)
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment\n"
    (tmp_path / "train.tsv").write_text(
        header + "abc\tcommon_voice_en_1.wav\tA \"quoted\" sentence.\t2\t0\t\t\t\ten\t\n"
        "def\tcommon_voice_en_2.wav\t\t2\t0\t\t\t\ten\t\n"
        "ghi\tcommon_voice_en_3.wav\tGone.\t2\t0\t\t\t\ten\t\n", encoding="utf-8")
    (tmp_path / "clip_durations.tsv").write_text("clip\tduration[ms]\ncommon_voice_en_1.wav\t1234\n")
    records, skipped = common_voice(tmp_path, split="train")
    assert [(r.id, r.text, r.speaker, r.duration) for r in records] == [
        ("common_voice_en_1", 'A "quoted" sentence.', "abc", 1.234)]
    assert {item for item, _ in skipped} == {"common_voice_en_2", "common_voice_en_3"}


def test_seed_tts_eval_meta(tmp_path):
    en = tmp_path / "en"
    tone(en / "prompt-wavs" / "p1.wav", 1.0)
    tone(en / "wavs" / "u1.wav", 2.0)
    (en / "meta.lst").write_text("u1|prompt words|prompt-wavs/p1.wav|target words|wavs/u1.wav\n"
                                 "u2|prompt words|prompt-wavs/p1.wav|no ground truth\n"
                                 "u3|x|prompt-wavs/missing.wav|y\n"
                                 "broken line\n")
    records, skipped = seed_tts_eval(en)
    assert [(r.id, r.text, r.prompt_text, r.task, r.language) for r in records] == [
        ("u1", "target words", "prompt words", "tts", "en"), ("u2", "no ground truth", "prompt words", "tts", "en")]
    assert records[0].prompt_audio == str((en / "prompt-wavs" / "p1.wav").resolve())
    assert records[0].audio == str((en / "wavs" / "u1.wav").resolve()) and records[1].audio is None
    assert [item for item, _ in skipped] == ["u3", "meta.lst:4"]


def test_wav_folder_and_cli_round_trip_through_datasets(tmp_path, capsys):
    corpus = tmp_path / "mine"
    tone(corpus / "alice" / "a1.wav", 1.0)
    (corpus / "alice" / "a1.txt").write_text("first line\n")
    tone(corpus / "bob" / "b1.flac", 0.7)
    (corpus / "bob" / "b1.lab").write_text("second")
    tone(corpus / "bob" / "b2.wav", 0.3)  # no transcript
    (corpus / "bob" / "b3.wav").write_bytes(b"RIFFjunk")  # corrupt, with transcript
    (corpus / "bob" / "b3.txt").write_text("broken")
    records, skipped = wav_folder(corpus)
    assert [(r.id, r.text, r.speaker) for r in records] == [("alice__a1", "first line", "alice"),
                                                            ("bob__b1", "second", "bob")]
    assert [reason.split(" ")[0] for _, reason in skipped] == ["no", "unreadable"]

    out = tmp_path / "manifests" / "mine.jsonl"
    assert build_manifest_cli(["folder", str(corpus), "--out", str(out), "--task", "tts"]) == 0
    assert "skipped 2" in capsys.readouterr().out
    assert len(json.loads(Path(f"{out}.skipped.json").read_text())) == 2
    back = read_manifest(out)
    assert [r.task for r in back] == ["tts", "tts"] and all(Path(r.audio).is_file() for r in back)
    dataset = load_manifest_dataset(out)
    assert dataset.num_rows == 2 and dataset[1]["text"] == "second" and Path(dataset[0]["audio"]).is_file()


def test_manifest_paths_are_relative_inside_and_absolute_outside(tmp_path):
    inside = tone(tmp_path / "data" / "wavs" / "x.wav", 0.2)
    outside = tone(tmp_path / "elsewhere" / "y.wav", 0.2)
    manifest = tmp_path / "data" / "m.jsonl"
    write_manifest([ManifestRecord("x", str(inside), 0.2, "x", "en"), ManifestRecord("y", str(outside), 0.2, "y", "en")],
                   manifest)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert rows[0]["audio"] == "wavs/x.wav" and rows[1]["audio"] == str(outside.resolve())
    moved = tmp_path / "moved"
    (tmp_path / "data").rename(moved)
    assert Path(read_manifest(moved / "m.jsonl")[0].audio).is_file()  # the folder is relocatable
    (moved / "bad.jsonl").write_text(json.dumps({**rows[0], "txet": "typo"}) + "\n")
    with pytest.raises(ValueError, match="unknown manifest keys"):
        read_manifest(moved / "bad.jsonl")
    with pytest.raises(ValueError, match="task must be one of"):
        ManifestRecord("z", None, None, "z", "en", task="translate")
