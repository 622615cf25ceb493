"""The `holitok-slm` CLI on a tiny unified model + tiny HoliTok saved in the real formats: tts (text, text file,
manifest, streaming), asr (files, folder, manifest -> jsonl/txt), serve, and one clear line for every bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import speech_like
from holitok_slm.cli import main

FAST = ["--max-seconds", "0.5", "--steps", "2"]  # 3 patches of 160 ms, 2 Euler steps: a tiny model in ~1 s


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_tts_from_text_text_file_and_manifest(tiny_slm, tmp_path):
    root, model, prompt = tiny_slm
    out = tmp_path / "one"
    assert main(["tts", *model, "--text", "hello world", "--prompt-audio", prompt, "--prompt-text", "a dog ran",
                 *FAST, "--out", str(out)]) == 0
    [row] = _rows(out / "results.jsonl")
    assert set(row) == {"id", "text", "path", "seconds", "ended_by_stop_head"}
    wav, sr = sf.read(row["path"])
    assert row["id"] == "0001" and row["text"] == "hello world" and Path(row["path"]) == out / "0001.wav"
    assert sr == 48000 and wav.ndim == 1 and 0 < wav.size <= 0.5 * sr and np.isfinite(wav).all()
    assert row["seconds"] == pytest.approx(wav.size / sr, abs=1e-4)
    assert isinstance(row["ended_by_stop_head"], bool)
    assert not list(out.glob("*.partial"))

    text_file = tmp_path / "sentences.txt"
    text_file.write_text("the cat sat\n\n   \na dog ran in the park\n", encoding="utf-8")
    out = tmp_path / "file"
    assert main(["tts", *model, "--text-file", str(text_file), "--prompt-audio", prompt, *FAST, "--seed", "3",
                 "--out", str(out)]) == 0
    rows = _rows(out / "results.jsonl")
    assert [(r["id"], r["text"]) for r in rows] == [("0001", "the cat sat"), ("0002", "a dog ran in the park")]
    assert sorted(p.name for p in out.iterdir()) == ["0001.wav", "0002.wav", "results.jsonl"]

    # A manifest: a row with its own prompt (path relative to the manifest), a row on --prompt-audio + instruction.
    (tmp_path / "voices").mkdir()
    speech_like(tmp_path / "voices" / "v.wav", f0=120.0)
    manifest = tmp_path / "tts.jsonl"
    manifest.write_text(json.dumps({"id": "spk/a", "text": "the mat", "prompt_audio": "voices/v.wav",
                                    "prompt_text": "hello world"}) + "\n" +
                        json.dumps({"id": "b", "text": "a cat ran", "instruction": "speak slow"}) + "\n")
    out = tmp_path / "manifest"
    assert main(["tts", *model, "--manifest", str(manifest), "--prompt-audio", prompt, *FAST, "--out", str(out)]) == 0
    rows = _rows(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["spk/a", "b"]
    assert [Path(r["path"]).name for r in rows] == ["spk_a.wav", "b.wav"]  # ids made safe as file names
    assert all(Path(r["path"]).is_file() for r in rows)


def test_stream_writes_incrementally_and_matches_one_shot(tiny_slm, tmp_path, monkeypatch):
    from holitok_slm.infer.pipeline import SpeechPipeline

    root, model, prompt = tiny_slm
    args = ["tts", *model, "--text", "the cat sat on the mat", "--prompt-audio", prompt, "--max-seconds", "0.7",
            "--steps", "2", "--seed", "7"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0

    stream_out = tmp_path / "stream" / "0001.wav"
    on_disk = []  # what a reader of the file sees each time the next chunk is requested
    original = SpeechPipeline.tts_stream

    def watched(self, *a, **kw):
        chunks = original(self, *a, **kw)
        written = 0
        while True:
            try:
                chunk = next(chunks)
            except StopIteration as stop:
                return stop.value
            if written:
                on_disk.append((sf.read(stream_out)[0].size, written))
            yield chunk
            written += chunk.numel()

    monkeypatch.setattr(SpeechPipeline, "tts_stream", watched)
    assert main([*args, "--out", str(tmp_path / "stream"), "--stream"]) == 0
    assert len(on_disk) >= 3 and all(seen == written for seen, written in on_disk)  # valid wav at every chunk

    plain, sr = sf.read(tmp_path / "plain" / "0001.wav")
    streamed, sr2 = sf.read(stream_out)
    assert sr == sr2 == 48000 and sf.info(str(stream_out)).subtype == "FLOAT"
    assert streamed.shape == plain.shape and np.allclose(streamed, plain, atol=1e-5)
    [a], [b] = _rows(tmp_path / "plain" / "results.jsonl"), _rows(tmp_path / "stream" / "results.jsonl")
    assert {**a, "path": None} == {**b, "path": None}


def test_asr_files_folder_and_manifest_to_jsonl_and_txt(tiny_slm, tmp_path):
    root, model, _ = tiny_slm
    clips = tmp_path / "clips"
    (clips / "sub").mkdir(parents=True)
    paths = [speech_like(clips / "a.wav", sr=16000, f0=150.0), speech_like(clips / "b.flac", seconds=0.9),
             speech_like(clips / "sub" / "c.wav", sr=22050, channels=2, f0=220.0)]
    (clips / "notes.txt").write_text("not audio")

    assert main(["asr", *model, *paths, "--out", str(tmp_path / "files.jsonl"), "--batch-size", "2"]) == 0
    rows = _rows(tmp_path / "files.jsonl")
    assert [(r["id"], r["audio"]) for r in rows] == [("a", paths[0]), ("b", paths[1]), ("c", paths[2])]
    assert all(isinstance(r["text"], str) and "\n" not in r["text"] for r in rows)

    assert main(["asr", *model, "--dir", str(clips), "--out", str(tmp_path / "dir.txt"), "--batch-size", "1"]) == 0
    lines = (tmp_path / "dir.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split("\t")[0] for line in lines] == ["a", "b", "sub/c"]
    # Batches of 1 and of 2 (length-sorted, left-padded) give the same transcripts.
    assert [line.split("\t", 1)[1] for line in lines] == [r["text"] for r in rows]

    manifest = clips / "m.jsonl"  # audio relative to the manifest's folder; the data_prep fields are allowed
    manifest.write_text("\n".join(json.dumps({"id": f"u{i}", "audio": str(Path(p).relative_to(clips)), "text": "ref",
                                              "language": "en"}) for i, p in enumerate(paths)) + "\n")
    assert main(["asr", *model, "--manifest", str(manifest), "--out", str(tmp_path / "out" / "m.jsonl")]) == 0
    got = _rows(tmp_path / "out" / "m.jsonl")
    assert [r["id"] for r in got] == ["u0", "u1", "u2"] and [r["text"] for r in got] == [r["text"] for r in rows]
    assert [Path(r["audio"]) for r in got] == [Path(p).resolve() for p in paths]


def test_serve_delegates_to_the_demo_app(tiny_slm, monkeypatch, capsys):
    import demo.app
    from demo.release import DEFAULT_RELEASE

    root, model, _ = tiny_slm
    calls = []
    monkeypatch.setattr(demo.app, "launch", lambda service, port, examples, block, host: calls.append(
        (service, port, examples, block, host)))
    assert main(["serve", *model, "--host", "0.0.0.0", "--port", "7999"]) == 0
    service, port, examples, block, host = calls.pop()
    assert (port, examples, block, host) == (7999, [], True, "0.0.0.0")
    assert service.info["model"] == str(root / "unified") and service.pipeline.codec.latent_dim == 16
    assert "http://0.0.0.0:7999/" in capsys.readouterr().out
    # No model arguments: the shipped release, verified against its manifest, with its examples.
    assert main(["serve"]) == 0
    service, port, examples, _, host = calls.pop()
    assert (port, host) == (7860, "127.0.0.1") and service.info["model"] == str(DEFAULT_RELEASE / "unified")
    assert examples and all(Path(e["prompt_wav"]).is_file() for e in examples)
    assert service.info["note"].startswith("Shipped weights")
    # `python -m demo` (demo.app.main --release) goes the same way, now with --host.
    assert demo.app.main(["--release", str(DEFAULT_RELEASE), "--host", "127.0.0.2", "--port", "7001"]) == 0
    service, port, examples, _, host = calls.pop()
    assert (port, host) == (7001, "127.0.0.2") and examples and service.info["note"].startswith("Shipped weights")


def _bad_case(case, root, model, prompt, tmp_path):
    """-> (argv, expected text in the error line)."""
    out = ["--out", str(tmp_path / "out")]
    tts = ["tts", *model, "--text", "hello world", "--prompt-audio", prompt, *FAST]
    if case == "missing_audio":
        return ["tts", *model, "--text", "hello", "--prompt-audio", str(tmp_path / "nope.wav"), *out], "not found"
    if case == "corrupt_audio":
        (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00garbage")
        return ["asr", *model, str(tmp_path / "bad.wav"), "--out", str(tmp_path / "t.txt")], "cannot read"
    if case == "silent_prompt":
        sf.write(tmp_path / "silent.wav", np.zeros(48000, np.float32), 48000)
        return ["tts", *model, "--text", "hello", "--prompt-audio", str(tmp_path / "silent.wav"), *out], "silent"
    if case == "empty_text":
        return ["tts", *model, "--text", "   ", "--prompt-audio", prompt, *out], "empty"
    if case == "unknown_characters":
        return ["tts", *model, "--text", "a snowman \u2603", "--prompt-audio", prompt, *out], "not trained on"
    if case == "empty_text_file":
        (tmp_path / "empty.txt").write_text("\n  \n")
        return ["tts", *model, "--text-file", str(tmp_path / "empty.txt"), "--prompt-audio", prompt, *out], \
            "no sentences"
    if case == "unknown_manifest_field":
        (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "txet": "hello"}) + "\n")
        return ["tts", *model, "--manifest", str(tmp_path / "m.jsonl"), "--prompt-audio", prompt, *out], \
            "unknown manifest keys ['txet']"
    if case == "manifest_missing_text":
        (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "hello"}) + "\n" + json.dumps({"id": "b"}))
        return ["tts", *model, "--manifest", str(tmp_path / "m.jsonl"), "--prompt-audio", prompt, *out], \
            "m.jsonl:2: no 'text'"
    if case == "asr_manifest_missing_audio":
        (tmp_path / "m.jsonl").write_text(json.dumps({"id": "a", "text": "x"}) + "\n")
        return ["asr", *model, "--manifest", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "t.jsonl")], \
            "no 'audio'"
    if case == "not_a_model":
        (tmp_path / "empty_dir").mkdir()
        return ["tts", "--model", str(tmp_path / "empty_dir"), "--tokenizer", str(root / "tokenizer"),
                "--text", "hello", "--prompt-audio", prompt, *out], "not a usable UnifiedModel folder"
    if case == "tokenizer_is_the_model":
        return ["asr", "--model", str(root / "unified"), "--tokenizer", str(root / "unified"), prompt,
                "--out", str(tmp_path / "t.txt")], "not a usable HoliTok folder"
    if case == "latent_dim_mismatch":
        return ["tts", "--model", str(root / "unified"), "--tokenizer", str(root / "tokenizer_8dim"),
                "--text", "hello", "--prompt-audio", prompt, *out], "makes 8-dim latents but"
    if case == "model_without_tokenizer":
        return ["serve", "--model", str(root / "unified")], "together"
    if case == "out_not_writable":
        (tmp_path / "a_file").write_text("x")
        return [*tts, "--out", str(tmp_path / "a_file" / "sub")], "not a writable folder"
    if case == "asr_out_not_writable":
        (tmp_path / "a_file").write_text("x")
        return ["asr", *model, prompt, "--out", str(tmp_path / "a_file" / "t.jsonl")], "not writable"
    if case == "asr_out_suffix":
        return ["asr", *model, prompt, "--out", str(tmp_path / "t.csv")], "must end in .jsonl or .txt"
    if case == "asr_empty_dir":
        (tmp_path / "nothing").mkdir()
        return ["asr", *model, "--dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "t.txt")], \
            "holds no audio files"
    raise AssertionError(case)


BAD_CASES = ["missing_audio", "corrupt_audio", "silent_prompt", "empty_text", "unknown_characters",
             "empty_text_file", "unknown_manifest_field", "manifest_missing_text", "asr_manifest_missing_audio",
             "not_a_model", "tokenizer_is_the_model", "latent_dim_mismatch", "model_without_tokenizer",
             "out_not_writable", "asr_out_not_writable", "asr_out_suffix", "asr_empty_dir"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_gives_one_clear_line_and_exit_2(tiny_slm, tmp_path, capsys, case):
    root, model, prompt = tiny_slm
    argv, expected = _bad_case(case, root, model, prompt, tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"holitok-slm {argv[0]}: error: ") and expected in lines[0], err
    assert "Traceback" not in err
    leftovers = [p.name for p in tmp_path.rglob("*") if p.suffix in (".wav", ".partial", ".jsonl", ".txt")
                 and p.name not in ("bad.wav", "silent.wav", "m.jsonl", "empty.txt")]
    assert not leftovers  # nothing written on bad input


def test_installed_script(tiny_slm, tmp_path):
    """The console script from setup.cfg, as a user runs it (the in-process tests above cover the rest)."""
    root, model, prompt = tiny_slm
    script = Path(sys.executable).with_name("holitok-slm")
    assert script.is_file(), "reinstall the package: pip install --no-deps -e ."
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([str(script), "tts", *model, "--text", "hello world", "--prompt-audio", prompt,
                           "--prompt-text", "a dog ran", *FAST, "--stream", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and sf.read(tmp_path / "o" / "0001.wav")[1] == 48000
    assert _rows(tmp_path / "o" / "results.jsonl")[0]["id"] == "0001"
