"""Process-group settings that make accelerate work the same on CPU-only machines as on GPUs.

Facts (docs/training.md): without CUDA accelerate leaves the backend unset, so a multi-process launch silently
runs independent copies and DeepSpeed miscounts processes. We force gloo + CPU in that case, and only when a
distributed launch really happened (setting a backend in a plain `python` run makes accelerate expect a group).
"""
from __future__ import annotations

import os

import torch


def launched_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def cpu_only() -> bool:
    return not torch.cuda.is_available()


def partial_state_kwargs() -> dict:
    """Keyword arguments for accelerate.PartialState."""
    if not cpu_only():
        return {}
    return {"cpu": True, **({"backend": "gloo"} if launched_distributed() else {})}


def accelerator_kwargs_handlers() -> list:
    """kwargs_handlers for accelerate.Accelerator (gloo process group on CPU-only distributed launches)."""
    from accelerate.utils import InitProcessGroupKwargs

    if cpu_only() and launched_distributed():
        return [InitProcessGroupKwargs(backend="gloo")]
    return []
