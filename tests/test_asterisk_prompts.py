"""data_prep.asterisk_prompts: which prompts are kept, the corpus folder it writes, and eval.report scoring that
folder's one split (on recordings laid out as Debian lays out the asterisk prompts, made from the smoke corpus)."""
from __future__ import annotations

import gzip
import json
import shutil

import pytest

from data_prep import asterisk_prompts
from data_prep.manifest import read_manifest
from demo.smoke import smoke_outputs
from eval import report


def _sounds(tmp_path, smoke):
    """A sounds folder (two top-level prompts, one in a subfolder) and a transcript file with lines to drop."""
    records = read_manifest(smoke.corpus / "test_unseen_voice.jsonl")[:3]
    sounds = tmp_path / "sounds"
    (sounds / "sub").mkdir(parents=True)
    for name, record in zip(("a", "sub/b", "short"), records):
        shutil.copy(record.audio, sounds / f"{name}.wav")
    lines = ["; comment line", f"a: {records[0].text}", f"sub/b: {records[1].text}", "short: Two words.",
             "digits: Press 5 to continue now.", "tone: [ascending tones]", "missing: This prompt has no recording."]
    transcripts = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(transcripts, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return sounds, transcripts, records


def test_prompts_are_filtered_and_written_as_a_held_out_voice_split(tmp_path_factory, tmp_path):
    smoke = smoke_outputs(tmp_path_factory.getbasetemp())
    sounds, transcripts, records = _sounds(tmp_path, smoke)
    summary = asterisk_prompts.build(tmp_path / "real", sounds, transcripts)
    kept = read_manifest(tmp_path / "real" / "test_unseen_voice.jsonl")
    assert [(r.id, r.text) for r in kept] == [("a", records[0].text), ("sub-b", records[1].text)]
    assert all(r.speaker == asterisk_prompts.SPEAKER and r.duration > 0 for r in kept)
    assert summary["splits"]["test_unseen_voice"]["utterances"] == 2
    assert json.loads((tmp_path / "real" / "corpus.json").read_text())["speaker"] == asterisk_prompts.SPEAKER

    class Spells:  # a text tokenizer without the first prompt's first letter
        def unknown_characters(self, text):
            return [c for c in text if c == records[0].text[0]]

    with pytest.raises(ValueError, match="a report needs two"):
        asterisk_prompts.build(tmp_path / "real2", sounds, transcripts, text_tokenizer=Spells())
    with pytest.raises(FileNotFoundError, match="apt-get install"):
        asterisk_prompts.build(tmp_path / "real3", tmp_path / "nowhere", transcripts)


def test_report_scores_the_one_split_of_such_a_folder(tmp_path_factory, tmp_path, capsys):
    smoke = smoke_outputs(tmp_path_factory.getbasetemp())
    sounds, transcripts, _ = _sounds(tmp_path, smoke)
    asterisk_prompts.build(tmp_path / "real", sounds, transcripts)
    out = tmp_path / "report"
    assert report.main(["--corpus", str(tmp_path / "real"), "--tokenizer", str(smoke.tokenizer), "--out", str(out),
                        "--splits", "unseen", "--parts", "resynth", "--per_unseen_voice", "1",
                        "--sim_judge", "none"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert set(data["splits"]) == {"unseen"} and len(data["splits"]["unseen"]["utterances"]) == 1
    assert {t["split"] for t in data["targets"]} == {"unseen"}
    with pytest.raises(SystemExit):
        report.main(["--corpus", str(tmp_path / "real"), "--tokenizer", "tiny", "--splits", "held_out"])
    assert "--splits" in capsys.readouterr().err
