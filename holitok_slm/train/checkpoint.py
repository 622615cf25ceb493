"""What a unified-model checkpoint holds besides its folder (holitok/train/run_state.py owns the folders, the atomic
rename and trainer_state.json): per-rank sampler position and RNG states, and the optimizer state.

Layout of OUTPUT/checkpoints/step-00001234/:
  model/                    save_pretrained() weights + config (usable for inference; the resume source without DS)
  optimizer.pt              optimizer state (plain torch), loaded with weights_only=True
  deepspeed/                DeepSpeed engine checkpoint (ZeRO-partitioned optimizer) when running under DeepSpeed
  trainer_state.json        step, scheduler, counters, world size, run facts, config (written last)
  rank-00000.json           that rank's sampler position and python/numpy RNG states
  rank-00000.safetensors    that rank's torch (and CUDA) RNG states
A checkpoint is written to `step-N.partial` and renamed when every rank has finished, so a crash mid-save never
leaves a directory that looks complete.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def rng_state() -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON-able python/numpy states, tensor states) of this process."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    plain = {"python": [py_version, list(py_state), py_gauss],
             "numpy": [np_kind, np_keys.tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    return plain, tensors


def set_rng_state(plain: dict, tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, gauss_value = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss_value))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def write_rank_state(directory: Path, rank: int, sampler_state: dict) -> None:
    plain, tensors = rng_state()
    (directory / f"rank-{rank:05d}.json").write_text(json.dumps({"sampler": sampler_state, "rng": plain}))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / f"rank-{rank:05d}.safetensors"))


def read_rank_state(directory: Path, rank: int) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    path = directory / f"rank-{rank:05d}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: {directory} was written by fewer processes than this run has")
    state = json.loads(path.read_text())
    return state["sampler"], state["rng"], load_file(str(directory / f"rank-{rank:05d}.safetensors"))


def load_optimizer_state(optimizer, path: Path) -> None:
    optimizer.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
