"""Shared test fixtures: the authors' golden conformance sets, tiny models, deterministic seeds."""
from __future__ import annotations

import os
from pathlib import Path

# Tests run tiny models: one thread is fastest and immune to OpenMP spinning when cores are shared; subprocesses
# (CLI, accelerate launches) inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import socket  # noqa: E402
from typing import NamedTuple  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# ../shared sits beside the checkout on developer machines and in CI; HOLITOK_SHARED_DIR overrides.
SHARED = Path(os.environ.get("HOLITOK_SHARED_DIR", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"


def golden_sets() -> list[Path]:
    sets = sorted(p for p in GOLDEN.glob("*") if (p / "model.pt").is_file())
    if not sets:
        raise FileNotFoundError(f"no golden sets under {GOLDEN}: set HOLITOK_SHARED_DIR to the shared/ folder")
    return sets


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(scope="session")
def tiny_golden_model():
    from holitok import HoliTok
    return HoliTok.from_pretrained(GOLDEN / "tiny_a", device="cpu")


@pytest.fixture(autouse=True)
def _no_global_state_leaks():
    """Every test must leave autograd on: an in-process entry point that turns it off breaks later tests."""
    yield
    leaked = not torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    assert not leaked, "this test (or code it ran) left torch autograd disabled"


# ---- a tiny unified model + tiny HoliTok saved in the real formats (CLI, demo and bad-input tests) -------------------
SLM_TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def speech_like(path, sr=48000, seconds=0.6, channels=1, f0=180.0) -> str:
    """A modulated tone (not silent, finite) written to `path`; returns the path as a string."""
    import soundfile as sf

    t = np.arange(int(sr * seconds)) / sr
    x = (0.2 * np.sin(2 * np.pi * f0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TinySLM(NamedTuple):
    root: Path
    flags: list[str]     # --model DIR --tokenizer DIR
    prompt: str          # a 1 s 16 kHz stereo voice prompt (resampled and mixed down inside)

    @property
    def model_dir(self) -> Path:
        return self.root / "unified"

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokenizer_8dim_dir(self) -> Path:
        """A HoliTok that makes 8-dim latents: does not fit the 16-dim model."""
        return self.root / "tokenizer_8dim"


@pytest.fixture(scope="session")
def tiny_slm(tmp_path_factory) -> TinySLM:
    """Untrained tiny unified model (random DiT/stop heads, so outputs depend on inputs) + tiny HoliTok, on disk."""
    from holitok import HoliTok, HoliTokConfig, get_preset_config
    from holitok_slm.tiny import build_tiny_model, randomize_heads

    root = tmp_path_factory.mktemp("tiny_slm")
    randomize_heads(build_tiny_model(SLM_TEXTS, root / "spm")).save_pretrained(root / "unified")
    torch.manual_seed(0)
    HoliTok(get_preset_config("tiny")).save_pretrained(root / "tokenizer")
    other = HoliTokConfig.from_dict({**get_preset_config("tiny").to_dict(), "latent_dim": 8})
    HoliTok(other).save_pretrained(root / "tokenizer_8dim")
    prompt = speech_like(root / "prompt_16k_stereo.wav", sr=16000, seconds=1.0, channels=2)
    return TinySLM(root, ["--model", str(root / "unified"), "--tokenizer", str(root / "tokenizer")], prompt)
