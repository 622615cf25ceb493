"""Shared test fixtures: the authors' golden conformance sets, tiny models, deterministic seeds."""
from __future__ import annotations

import os
from pathlib import Path

# Tests run tiny models: one thread is fastest and immune to OpenMP spinning when cores are shared; subprocesses
# (CLI, accelerate launches) inherit it through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
