"""What both trainers (tokenizer stages, unified model) share: checkpoint folders and the non-finite-loss policy.

Checkpoint folders: OUTPUT/checkpoints/step-00001234/. A checkpoint is written to `step-00001234.partial`, gets its
trainer_state.json last and is then renamed, so a crash mid-save never leaves a folder that looks complete. What a
folder holds besides trainer_state.json is the trainer's business (accelerate `save_state` for the tokenizer,
holitok_slm/train/trainer.py's own files for the unified model). Tokenizer checkpoints written before this layout
(`step_1234`, no `.partial` stage) are still found and resumed.

Non-finite losses: the step is skipped (no optimizer update), counted, and `max_consecutive` skipped steps in a row
stop the run with a checkpoint (the weights of the last good step) and exit code EXIT_NONFINITE.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAINER_STATE = "trainer_state.json"
PARTIAL = ".partial"
EXIT_NONFINITE = 3
_STEP_NAME = re.compile(r"^step[-_](\d+)$")  # step-00001234, or the tokenizer's older step_1234


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:08d}"


def checkpoint_step(path: Path) -> int | None:
    match = _STEP_NAME.match(path.name)
    return int(match.group(1)) if match else None


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints (trainer_state.json present, not a .partial), oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and checkpoint_step(p) is not None and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=checkpoint_step)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_paths(output_dir: str | Path, step: int) -> tuple[Path, Path]:
    """(the .partial folder a checkpoint is written into, the folder it is renamed to when complete)."""
    final = checkpoint_dir(output_dir, step)
    return final.with_name(final.name + PARTIAL), final


def start_checkpoint(output_dir: str | Path, step: int) -> tuple[Path, Path]:
    """checkpoint_paths(), with the .partial folder emptied and created. Main process only."""
    partial, final = checkpoint_paths(output_dir, step)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial, final


def publish_checkpoint(partial: Path, final: Path, state: dict[str, Any], keep_last: int) -> Path:
    """Writes trainer_state.json (``state`` must hold "step") into ``partial``, renames it to ``final``, prunes.
    Main process only, after every rank has written its part."""
    if "step" not in state:
        raise ValueError("trainer state needs a 'step'")
    (partial / TRAINER_STATE).write_text(json.dumps(state, indent=1, default=str))
    if final.exists():  # the same step saved again (e.g. a resumed run that stopped at once): replace it
        shutil.rmtree(final)
    os.replace(partial, final)
    prune_checkpoints(final.parent.parent, keep_last)
    return final


def read_trainer_state(directory: Path) -> dict[str, Any]:
    return json.loads((directory / TRAINER_STATE).read_text())


@dataclass
class NonFiniteGuard:
    """Counts skipped non-finite steps; ``record`` says whether the run must stop now."""

    max_consecutive: int
    total: int = 0
    consecutive: int = 0

    def record(self, finite: bool) -> bool:
        if finite:
            self.consecutive = 0
            return False
        self.total += 1
        self.consecutive += 1
        return self.consecutive >= self.max_consecutive

    def skipped_message(self, step: int) -> str:
        return f"step {step}: non-finite loss, step skipped ({self.consecutive} in a row, {self.total} total)"

    def stop_message(self, step: int, checkpoint: Path) -> str:
        return (f"STOPPING: {self.consecutive} consecutive steps had a non-finite loss "
                f"(steps {step - self.consecutive + 1}..{step}). The weights are those of the last good step; "
                f"checkpoint: {checkpoint}. Lower the learning rate, check the data, or resume with the same command.")

    def state_dict(self) -> dict[str, int]:
        # The unified trainer's checkpoints have always called these nonfinite_steps / consecutive_nonfinite.
        return {"nonfinite_steps": self.total, "consecutive_nonfinite": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total = int(state.get("nonfinite_steps", 0))
        self.consecutive = int(state.get("consecutive_nonfinite", 0))
