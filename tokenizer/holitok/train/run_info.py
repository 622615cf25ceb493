"""What a training run really is (processes, backend, device, precision, DeepSpeed), shared by both trainers.

accelerate can quietly run something other than what was asked for: `--cpu --num_processes 2` starts one process,
and ACCELERATE_USE_CPU=1 drops a DeepSpeed plugin and trains plain DDP. So each trainer prints this at start and
stores it with its metrics and checkpoints, and refuses a DeepSpeed request that is not active.
"""
from __future__ import annotations

import os
from typing import Any


def deepspeed_requested(config_path: str | None = None) -> bool:
    return bool(config_path) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"


def describe_accelerator(accelerator) -> dict[str, Any]:
    from accelerate.utils import DistributedType

    active = accelerator.distributed_type == DistributedType.DEEPSPEED
    state = accelerator.state
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "backend": getattr(state, "backend", None) or "none",
        "device": str(accelerator.device),
        "mixed_precision": accelerator.mixed_precision,
        "deepspeed": active,
        "zero_stage": state.deepspeed_plugin.zero_stage if active else None,
    }


def refuse_inactive_deepspeed(info: dict[str, Any], requested: bool, what: str) -> None:
    """SystemExit when DeepSpeed was asked for (`what` says how) but the run is not a DeepSpeed run."""
    if requested and not info["deepspeed"]:
        raise SystemExit(
            f"DeepSpeed was requested ({what}) but accelerate set up {info['distributed_type']} with "
            f"{info['world_size']} process(es), so ZeRO would not run. On CPU, launch without ACCELERATE_USE_CPU "
            "(the trainer sets up gloo itself): `accelerate launch --multi_gpu --num_processes 2 --num_machines 1 "
            "--mixed_precision no --dynamo_backend no ...`; or drop the DeepSpeed setting to train with plain DDP.")


def format_run_info(info: dict[str, Any], batch: str) -> str:
    zero = f"DeepSpeed ZeRO-{info['zero_stage']}" if info["deepspeed"] else "no DeepSpeed"
    return (f"run: {info['world_size']} process(es), {info['distributed_type']} ({info['backend']}), device "
            f"{info['device']}, precision {info['mixed_precision']}, {zero}, {batch} per optimizer step")
