"""data_prep.asterisk_voices and asterisk_prompts --wideband: G.722 recordings decoded, short and empty ones left out,
the test speaker refused, and the mix's human share (on folders laid out as Debian lays out the asterisk prompts)."""
from __future__ import annotations

import json

import G722
import numpy as np
import pytest
import soundfile as sf

from data_prep import asterisk_prompts, asterisk_voices
from data_prep.manifest import ManifestRecord, read_manifest, write_manifest


def _speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A 150 Hz buzz with three formant-like partials and a little noise, in int16."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(a * np.sin(2 * np.pi * f * t) for a, f in ((0.3, 150), (0.2, 600), (0.1, 1800), (0.05, 3300)))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (x * 0.8 * 32767 / np.abs(x).max()).astype(np.int16)


def _write_g722(path, samples: np.ndarray) -> None:
    codec = G722.G722(asterisk_voices.G722_RATE, asterisk_voices.G722_BITRATE, use_numpy=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(codec.encode(samples))  # int16 samples in, 4 bits a sample out


def _sounds(tmp_path):
    sounds = tmp_path / "sounds"
    june = sounds / "fr_CA_f_June"
    _write_g722(june / "long.g722", _speech_like(1.5, 16000, 0))
    _write_g722(june / "digits" / "1.g722", _speech_like(2.0, 16000, 1))
    _write_g722(june / "tiny.g722", _speech_like(0.5, 16000, 2))  # under min_seconds
    (june / "empty.g722").write_bytes(b"")  # Debian ships a few of these
    menardi = sounds / "it_IT_f_Menardi"
    menardi.mkdir(parents=True)
    sf.write(str(menardi / "ciao.wav"), _speech_like(1.2, 8000, 3), 8000)
    return sounds


def test_g722_decodes_to_the_signal_it_encoded():
    clip = _speech_like(1.0, 16000, 4)
    codec = G722.G722(asterisk_voices.G722_RATE, asterisk_voices.G722_BITRATE, use_numpy=False)
    decoded = np.frombuffer(codec.decode(codec.encode(clip)), dtype=np.int16).astype(float)
    assert decoded.size == clip.size
    # G.722 delays by a few samples; the decoded signal matches the input once aligned.
    best = max(np.corrcoef(decoded[lag:], clip[:clip.size - lag].astype(float))[0, 1] for lag in range(40))
    assert best > 0.95


def test_voices_are_decoded_filtered_and_mixed(tmp_path):
    sounds = _sounds(tmp_path)
    corpus = [ManifestRecord(id=f"c{i}", audio=str(tmp_path / f"c{i}.wav"), duration=1.0, text="a b", language="en",
                             speaker="synth") for i in range(30)]
    write_manifest(corpus, tmp_path / "corpus" / "train.jsonl")
    voices = {"asterisk_june_fr": "fr_CA_f_June", "asterisk_menardi_it": "it_IT_f_Menardi"}
    summary = asterisk_voices.build(tmp_path / "human", voices, sounds,
                                    corpus_train=tmp_path / "corpus" / "train.jsonl", share=0.25)
    records = read_manifest(tmp_path / "human" / "train.jsonl")
    assert sorted(r.id for r in records) == ["asterisk_june_fr-digits-1", "asterisk_june_fr-long",
                                             "asterisk_menardi_it-ciao"]
    by_id = {r.id: r for r in records}
    assert by_id["asterisk_june_fr-long"].language == "fr" and by_id["asterisk_menardi_it-ciao"].language == "it"
    decoded, rate = sf.read(by_id["asterisk_june_fr-long"].audio)
    assert rate == 16000 and abs(decoded.size - 24000) <= 1 and np.abs(decoded).max() > 0.3
    assert sf.info(by_id["asterisk_menardi_it-ciao"].audio).samplerate == 8000  # read where it lies
    rows = [json.loads(line) for line in (tmp_path / "human" / "mix.jsonl").read_text().splitlines()]
    human = [r for r in rows if r["speaker"] != "synth"]
    assert summary["mix"]["repeats"] == 3 and len(human) == 9 and len(rows) == 39  # 9 / 39 = 0.23, the nearest to 0.25
    assert all(r["audio"].startswith("/") for r in rows)


def test_the_test_speaker_and_missing_folders_are_refused(tmp_path):
    sounds = _sounds(tmp_path)
    with pytest.raises(ValueError, match="test speaker"):
        asterisk_voices.collect(tmp_path / "h", {"x": "en_US_f_Allison"}, sounds)
    with pytest.raises(FileNotFoundError, match="apt-get install"):
        asterisk_voices.collect(tmp_path / "h", {"x": "ru_RU_f_IvrvoiceRU"}, sounds)
    with pytest.raises(ValueError, match="share"):
        asterisk_voices.mix(tmp_path / "none.jsonl", [], 1.0)


def test_prompts_wideband_reads_the_g722_recordings(tmp_path):
    sounds = tmp_path / "en"
    _write_g722(sounds / "a.g722", _speech_like(1.5, 16000, 5))
    _write_g722(sounds / "b.g722", _speech_like(2.5, 16000, 6))
    sf.write(str(sounds / "c.wav"), _speech_like(1.0, 8000, 7), 8000)  # no .g722: not kept in wideband
    transcripts = tmp_path / "core-sounds-en.txt"
    transcripts.write_text("a: Please enter your number.\nb: Goodbye and thank you.\nc: This one has a wav.\n")
    asterisk_prompts.build(tmp_path / "real", sounds, transcripts, wideband=True)
    kept = read_manifest(tmp_path / "real" / "test_unseen_voice.jsonl")
    assert [r.id for r in kept] == ["a", "b"]
    assert all(sf.info(r.audio).samplerate == 16000 for r in kept)
    assert abs(kept[1].duration - 2.5) < 1e-3
