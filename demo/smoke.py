"""Runs the `smoke` preset of the demo pipeline once into a folder (the CLI, as a user would) and reuses it afterwards.

Used by the tests of demo/ and eval/, which all need a trained (if useless) tokenizer + unified model:
the first caller pays the ~1 minute, later callers find every step done. The first run's output is kept in
`<base>/demo_smoke.log` so a test can check what a fresh run printed.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import REPO_ROOT


@dataclass
class SmokeOutputs:
    out: Path
    log: str                # what the first (fresh) run printed

    @property
    def tokenizer(self) -> Path:
        return self.out / "tokenizer"

    @property
    def model(self) -> Path:
        return self.out / "unified" / "final"

    @property
    def corpus(self) -> Path:
        return self.out / "corpus"


def smoke_command(out: Path) -> list[str]:
    return [sys.executable, "-m", "demo.pipeline", "--preset", "smoke", "--no-launch", "--threads", "1",
            "--out", str(out)]


def smoke_outputs(base: str | Path, timeout: float = 600) -> SmokeOutputs:
    base = Path(base)
    out, log_path = base / "demo_smoke", base / "demo_smoke.log"
    if not log_path.is_file():
        result = subprocess.run(smoke_command(out), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"smoke pipeline failed (exit {result.returncode}):\n{result.stdout[-4000:]}\n"
                               f"{result.stderr[-4000:]}")
        log_path.write_text(result.stdout)
    return SmokeOutputs(out, log_path.read_text())
