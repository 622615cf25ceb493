"""Two CPU processes (gloo DDP) run all three tiny stages from the shipped configs, then resume: the last stage on its
own, and the chain with more steps, whose later stages must refuse to resume onto the retrained earlier one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from holitok.train.run_state import read_trainer_state
from holitok.train.toy_assets import save_tiny_teachers, write_clips

REPO = Path(__file__).resolve().parents[1]


def launch(cwd, max_steps, stages=(1, 2, 3), expect_success=True):
    configs = []
    for stage in stages:
        configs += ["--config", str(REPO / "configs" / "tokenizer" / f"tiny_stage{stage}.yaml")]
    # `--cpu --num_processes 2` would silently run one process; --multi_gpu + ACCELERATE_USE_CPU gives two.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "holitok.train", *configs, "--set", f"train.max_steps={max_steps}", "--set", "train.save_every=1",
               "--set", "train.progress_bar=false"]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert (done.returncode == 0) == expect_success, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_two_process_run_of_every_stage_completes_and_resumes(tmp_path):
    # The tiny configs use repository-relative paths; recreate that layout in a scratch folder.
    write_clips(tmp_path / "data" / "synth_tiny", count=2, seconds=0.8)
    save_tiny_teachers(tmp_path / "runs" / "tokenizer" / "tiny_teachers")
    runs = tmp_path / "runs" / "tokenizer"

    first = launch(tmp_path, max_steps=1)
    assert first.count("on 2 processes") == 3  # really data-parallel, once per stage
    assert first.count("run: 2 process(es), MULTI_CPU (gloo)") == 3 and "no DeepSpeed" in first
    state = json.loads((runs / "tiny_stage1" / "checkpoints" / "step-00000001" / "trainer_state.json").read_text())
    assert state["run"]["world_size"] == 2 and state["run"]["backend"] == "gloo"
    for stage in (1, 2, 3):
        assert read_trainer_state(runs / f"tiny_stage{stage}" / "checkpoints" / "step-00000001")["step"] == 1
        assert (runs / f"tiny_stage{stage}" / "final" / "runtime" / "model.pt").is_file()

    # The last stage can be continued on its own: what it was initialised from has not changed.
    second = launch(tmp_path, max_steps=2, stages=(3,))
    assert "resumed from runs/tokenizer/tiny_stage3/checkpoints/step-00000001 at step 1" in second
    assert read_trainer_state(runs / "tiny_stage3" / "checkpoints" / "step-00000002")["step"] == 2
    assert "stage 3 finished at step 2" in second
    # Raising max_steps for the whole chain trains Stage I further, so Stage II would resume on top of another
    # Stage I than the one it started from: refused, naming both, instead of silently mixing the two runs.
    third = launch(tmp_path, max_steps=2, expect_success=False)
    assert "resumed from runs/tokenizer/tiny_stage1/checkpoints/step-00000001 at step 1" in third
    assert "stage 1 finished at step 2" in third
    assert "tiny_stage2/checkpoints/step-00000001 was initialised from runs/tokenizer/tiny_stage1" in third
    assert "resuming would mix two runs" in third
