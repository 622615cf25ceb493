"""The `holitok` CLI on the golden tiny model: every command, and one clear line for every kind of bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from holitok.cli import main

from conftest import GOLDEN

CKPT = ["--checkpoint", str(GOLDEN / "tiny_a")]


def _tone(path, sr=48000, seconds=0.3, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


def test_encode_decode_reconstruct_semantic(tmp_path):
    wav = _tone(tmp_path / "in.wav", sr=16000, seconds=0.5)  # resampled to 48 kHz inside
    assert main(["encode", *CKPT, "--input", str(wav), "--output", str(tmp_path / "z.pt"), "--mode", "mean"]) == 0
    payload = torch.load(tmp_path / "z.pt", weights_only=True)
    assert payload["latents"].shape == (1, 16, 13) and payload["mode"] == "mean" and payload["hop_size"] == 1920
    assert main(["decode", *CKPT, "--input", str(tmp_path / "z.pt"), "--output", str(tmp_path / "out.wav")]) == 0
    out, sr = sf.read(tmp_path / "out.wav")
    assert sr == 48000 and out.shape == (24000,)
    assert main(["reconstruct", *CKPT, "--input", str(wav), "--output", str(tmp_path / "rec.wav"),
                 "--seed", "3"]) == 0
    assert sf.read(tmp_path / "rec.wav")[0].shape == (24000,)
    assert main(["encode", *CKPT, "--input", str(wav), "--output", str(tmp_path / "p.pt"), "--mode",
                 "posterior"]) == 0
    assert main(["semantic", *CKPT, "--input-latents", str(tmp_path / "p.pt"), "--output",
                 str(tmp_path / "f.pt"), "--posterior-mode", "mean"]) == 0
    feats = torch.load(tmp_path / "f.pt", weights_only=True)
    assert feats["features"].shape == (1, 13, 64) and feats["semantic_dim"] == 64
    assert main(["semantic", *CKPT, "--input-audio", str(wav), "--output", str(tmp_path / "g.pt"),
                 "--mode", "mean"]) == 0
    assert torch.allclose(torch.load(tmp_path / "g.pt", weights_only=True)["features"], feats["features"],
                          atol=1e-5)


def test_stereo_is_mixed_down(tmp_path):
    stereo = _tone(tmp_path / "st.wav", channels=2)
    mono = _tone(tmp_path / "mono.wav")
    for name, wav in (("a", stereo), ("b", mono)):
        assert main(["encode", *CKPT, "--input", str(wav), "--output", str(tmp_path / f"{name}.pt"),
                     "--mode", "mean"]) == 0
    a, b = (torch.load(tmp_path / f"{n}.pt", weights_only=True)["latents"] for n in "ab")
    assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("case", ["empty", "nan", "corrupt", "missing", "bad_checkpoint", "bad_latents"])
def test_bad_input_gives_one_clear_line(tmp_path, case):
    args = ["reconstruct", *CKPT, "--input", str(tmp_path / "in.wav"), "--output", str(tmp_path / "o.wav")]
    if case == "empty":
        sf.write(tmp_path / "in.wav", np.zeros(0), 48000)
        expected = "empty"
    elif case == "nan":
        sf.write(tmp_path / "in.wav", np.full(4800, np.nan), 48000, subtype="FLOAT")
        expected = "NaN"
    elif case == "corrupt":
        (tmp_path / "in.wav").write_bytes(b"RIFF\x00\x00garbage")
        expected = "cannot read"
    elif case == "missing":
        expected = "not found"
    elif case == "bad_checkpoint":
        _tone(tmp_path / "in.wav")
        torch.save({"model": {"nonsense": torch.zeros(3)}}, tmp_path / "m.pt")
        args = ["reconstruct", "--config", str(GOLDEN / "tiny_a" / "config.json"), "--checkpoint",
                str(tmp_path / "m.pt"), "--input", str(tmp_path / "in.wav"), "--output", str(tmp_path / "o.wav")]
        expected = "missing keys"
    else:
        torch.save({"latents": torch.zeros(1, 7, 3)}, tmp_path / "z.pt")
        args = ["decode", *CKPT, "--input", str(tmp_path / "z.pt"), "--output", str(tmp_path / "o.wav")]
        expected = "decode expects"
    proc = subprocess.run([sys.executable, "-m", "holitok.cli", *args], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert not (tmp_path / "o.wav").exists()
