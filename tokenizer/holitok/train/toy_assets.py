"""Tiny on-disk assets for tests and CPU smoke runs: random WavLM/x-vector teachers and synthetic voiced clips.

``python -m holitok.train.toy_assets teachers OUT_DIR`` writes ``OUT_DIR/wavlm`` and ``OUT_DIR/xvector``, loadable
exactly like real teachers (``distill.wavlm_path`` / ``distill.xvector_path``). Random teachers exercise the
Stage III machinery; they carry no speech knowledge, so distilling them adds nothing to a real model.
``python -m holitok.train.toy_assets clips OUT_DIR`` writes a few harmonic "vowel" clips plus ``train.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

TINY_WAVLM = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                  num_buckets=32, max_bucket_distance=80, feat_extract_norm="layer", do_stable_layer_norm=True,
                  tdnn_dim=(32, 32, 32, 32, 64), xvector_output_dim=16)


def save_tiny_teachers(directory: str | Path, seed: int = 0) -> tuple[Path, Path]:
    from transformers import WavLMConfig, WavLMForXVector, WavLMModel

    directory = Path(directory)
    torch.manual_seed(seed)
    config = WavLMConfig(**TINY_WAVLM)
    wavlm_dir, xvector_dir = directory / "wavlm", directory / "xvector"
    WavLMModel(config).save_pretrained(wavlm_dir)
    WavLMForXVector(config).save_pretrained(xvector_dir)
    return wavlm_dir, xvector_dir


def voiced_clip(seed: int, seconds: float = 0.8, sample_rate: int = 48000) -> np.ndarray:
    """A gliding harmonic tone with a formant-like spectral envelope, syllable-rate amplitude modulation and a
    little noise: speech-like enough to give a vocoder something to learn, deterministic per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 110 + 40 * seed + 30 * np.sin(2 * np.pi * 1.5 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formant = 700 + 300 * seed
    x = sum((0.6 / k) * np.sin(k * phase) * np.exp(-0.5 * ((k * f0 - formant) / 600) ** 2 + 0.1) for k in range(1, 30))
    x = x * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t + seed)) + 0.01 * rng.standard_normal(t.shape)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def write_clips(directory: str | Path, count: int = 2, seconds: float = 0.8, sample_rate: int = 48000) -> Path:
    """``count`` clips + a ``train.jsonl`` manifest (with an ASR text each); returns the manifest path."""
    import soundfile as sf

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "train.jsonl"
    with open(manifest, "w", encoding="utf-8") as f:
        for index in range(count):
            name = f"clip{index}.wav"
            sf.write(directory / name, voiced_clip(index, seconds, sample_rate), sample_rate)
            f.write(json.dumps({"audio": name, "text": f"clip number {index}"}) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["teachers", "clips"])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.what == "teachers":
        wavlm, xvector = save_tiny_teachers(args.out_dir, args.seed)
        print(f"wrote {wavlm} and {xvector}")
    else:
        print(f"wrote {write_clips(args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
