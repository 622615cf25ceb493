"""On-disk store of pre-extracted HoliTok latents: sharded safetensors written once, read lazily during training.

Layout of a store folder:
  shard-00000.safetensors   "latents" [sum T, D] (posterior mean, raw scale) in the store's dtype, "offsets" [n+1]
                            int64, "task_bits" [n] int8 (TASK_BITS; stores written before it read the JSON
                            instead), optional "semantic" [sum T, H] (Unite features)
  shard-00000.json          {"items": [{id, text, language, speaker, task, num_frames}], "skipped": [{id, reason}]}
  index.json                written last by the extractor: format, dims, frame rate, shard count, items per shard,
                            tokenizer info
  points/                   optional, written by data_prep/align_latents.py: a forced alignment of each item's text,
                            shard-00000.safetensors "points" [sum T] float32 (per frame, the fractional position in
                            the text's tokens; NaN for an item it could not align) and index.json (the aligning model
                            and its text tokenizer's ids of a probe text): what a forced text pointer reads
A shard's JSON is written after its tensors, each through a rename, so a killed extraction never leaves a half shard.

At 100K hours a store has ~70M items in ~140K shards. Nothing reads the whole store at start-up: a LatentStore opened
with `shards=` (each training rank its own, `data.shard_per_rank`) reads only those shards, and only their numeric
facts (frames from the offsets, task bits) from the safetensors headers; texts and ids stay in the shard JSONs and are
read when an item is drawn.

Storage dtype (`STORE_DTYPES`): float32 (exact), float16 or bfloat16 (half the disk: 95K hours of 25 Hz x 128 latents
are ~4.4 TB in float32, ~2.2 TB in half). Reading always returns float32. Exactness: float16 keeps 11 significant bits
(relative error <= 2^-11 ~ 4.9e-4 for |x| >= 6.1e-5, absolute <= 3e-8 below; HoliTok latents are O(1), far from the
65504 overflow), bfloat16 8 bits (<= 2^-8 ~ 3.9e-3) with float32's range. tests/test_data_extract_latents.py checks
the round trip against these bounds.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT = "holitok-latents-v1"
POINTS_DIR = "points"
POINTS_FORMAT = "holitok-text-points-v1"
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TASK_BITS = {"tts": 1, "asr": 2, "both": 3}


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def shard_complete(store: Path, index: int) -> bool:
    return (store / f"{shard_name(index)}.json").exists() and (store / f"{shard_name(index)}.safetensors").exists()


def write_shard(store: str | Path, index: int, items: list[dict], latents: list[torch.Tensor],
                semantic: list[torch.Tensor] | None, skipped: list[dict], dtype: str = "float32") -> None:
    """Writes one shard atomically, tensors in ``dtype`` (STORE_DTYPES). `items[i]["num_frames"]` must equal
    latents[i].shape[0]."""
    if dtype not in STORE_DTYPES:
        raise ValueError(f"store dtype must be one of {sorted(STORE_DTYPES)}, got {dtype!r}")
    kind = STORE_DTYPES[dtype]
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    lengths = [int(x.shape[0]) for x in latents]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]) if lengths else [0], dtype=torch.int64)
    dim = int(latents[0].shape[1]) if latents else 0
    tensors = {"latents": torch.cat(latents).to(kind).contiguous() if latents else torch.zeros(0, dim, dtype=kind),
               "offsets": offsets,
               "task_bits": torch.tensor([TASK_BITS[item.get("task", "both")] for item in items], dtype=torch.int8)}
    if semantic is not None:
        hidden = int(semantic[0].shape[1]) if semantic else 0
        tensors["semantic"] = (torch.cat(semantic).to(kind).contiguous() if semantic
                               else torch.zeros(0, hidden, dtype=kind))
    name = shard_name(index)
    tmp = store / f"{name}.safetensors.partial"
    save_file(tensors, str(tmp))
    os.replace(tmp, store / f"{name}.safetensors")
    tmp = store / f"{name}.json.partial"
    tmp.write_text(json.dumps({"items": items, "skipped": skipped}, ensure_ascii=False))
    os.replace(tmp, store / f"{name}.json")


def _concat(parts: list, kind) -> np.ndarray:
    return np.concatenate(parts).astype(kind) if parts else np.zeros(0, dtype=kind)


class _LazyIds:
    """`store.ids[i]`: the id of item i, read from its shard's JSON only when asked for."""

    def __init__(self, store: "LatentStore"):
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> str:
        return self.store.meta(int(i))["id"]


class BadItem(Exception):
    """An item that cannot be trained on; the message is "<category>: <details>"."""


class LatentStore:
    """Random access to the items of one store (or of the shards listed in `shards`). Cheap per-item facts (frames,
    task bits, shard position) live in numpy arrays; ids, texts and tensors are read from the shard files on demand
    (memory-mapped safetensors, a small LRU of parsed shard JSONs)."""

    def __init__(self, path: str | Path, max_shards_open: int = 16, shards: "list[int] | slice | None" = None):
        self.path = Path(path)
        index_path = self.path / "index.json"
        if not index_path.exists():
            raise FileNotFoundError(f"{index_path} not found: the latent extraction of {self.path} is missing or "
                                    "unfinished; run (or resume) `python -m data_prep.extract_latents`")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != FORMAT:
            raise ValueError(f"{index_path}: format {self.index.get('format')!r}, expected {FORMAT!r}")
        self.latent_dim = int(self.index["latent_dim"])
        self.semantic_dim = self.index.get("semantic_dim")
        num_shards = int(self.index["num_shards"])
        if isinstance(shards, slice):  # e.g. slice(rank, None, world_size): this rank's shards
            shards = list(range(num_shards))[shards]
        self.shards = list(range(num_shards)) if shards is None else [int(k) for k in shards]
        outside = [k for k in self.shards if not 0 <= k < num_shards]
        if outside:
            raise ValueError(f"{self.path} has shards 0..{num_shards - 1}; asked for {outside}")
        self._meta: OrderedDict[int, list[dict]] = OrderedDict()
        self._handles: OrderedDict[int, object] = OrderedDict()
        self._point_handles: OrderedDict[int, object] = OrderedDict()
        self.max_open = max_shards_open
        shard_ids, positions, frames, tasks = [], [], [], []
        self.missing_shards: list[int] = []
        for shard in self.shards:
            facts = self._shard_facts(shard)
            if facts is None:  # deleted after extraction: its items are simply absent, reported once
                self.missing_shards.append(shard)
                continue
            shard_frames, shard_tasks = facts
            shard_ids.append(np.full(len(shard_frames), shard, dtype=np.int32))
            positions.append(np.arange(len(shard_frames), dtype=np.int32))
            frames.append(shard_frames)
            tasks.append(shard_tasks)
        self.shard_of = _concat(shard_ids, np.int32)
        self.position = _concat(positions, np.int32)
        self.num_frames = _concat(frames, np.int64)
        self.task_bits = _concat(tasks, np.int8)
        self.ids = _LazyIds(self)

    def _shard_facts(self, shard: int) -> "tuple[np.ndarray, np.ndarray] | None":
        """(frames, task bits) of one shard's items, from the tensors when they carry them, else from the JSON."""
        meta_path = self.path / f"{shard_name(shard)}.json"
        if not meta_path.exists():
            return None
        try:
            with safe_open(str(self.path / f"{shard_name(shard)}.safetensors"), framework="pt") as handle:
                if "task_bits" in handle.keys():
                    offsets = handle.get_tensor("offsets").numpy()
                    return np.diff(offsets), handle.get_tensor("task_bits").numpy()
        except (SafetensorError, OSError):
            pass  # a corrupt tensor file: the JSON still lists the items, which then fail (and are logged) on load
        items = json.loads(meta_path.read_text())["items"]
        return (np.array([item["num_frames"] for item in items], dtype=np.int64),
                np.array([TASK_BITS[item.get("task", "both")] for item in items], dtype=np.int8))

    def __len__(self) -> int:
        return len(self.shard_of)

    def _cached(self, cache: OrderedDict, key: int, make):
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = make()
        cache[key] = value
        if len(cache) > self.max_open:
            cache.popitem(last=False)
        return value

    def meta(self, i: int) -> dict:
        shard = int(self.shard_of[i])
        items = self._cached(self._meta, shard, lambda: json.loads(
            (self.path / f"{shard_name(shard)}.json").read_text())["items"])
        return items[int(self.position[i])]

    def points_index(self) -> dict:
        """The forced alignment's index.json (`points/`); FileNotFoundError naming the command when there is none."""
        path = self.path / POINTS_DIR / "index.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {self.path} has no forced alignment of its texts; run "
                                    f"`python -m data_prep.align_latents --latents {self.path} --model MODEL_DIR`")
        index = json.loads(path.read_text())
        if index.get("format") != POINTS_FORMAT:
            raise ValueError(f"{path}: format {index.get('format')!r}, expected {POINTS_FORMAT!r}")
        return index

    def _points(self, shard: int, start: int, end: int) -> torch.Tensor:
        path = self.path / POINTS_DIR / f"{shard_name(shard)}.safetensors"
        if not path.exists():
            raise BadItem(f"unaligned: {path} is missing (data_prep/align_latents.py has not reached this shard)")
        try:
            handle = self._cached(self._point_handles, shard, lambda: safe_open(str(path), framework="pt"))
            points = handle.get_slice("points")[start:end].float()
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise BadItem(f"corrupt: {path.name}: {err}") from None
        if points.shape[0] != end - start:
            raise BadItem(f"corrupt: {path.name} has no points for frames {start}..{end}")
        if not torch.isfinite(points).all():
            raise BadItem("unaligned: the forced alignment could not align this item's text")
        return points

    def load(self, i: int, with_semantic: bool = False, with_points: bool = False) -> dict:
        """The training item dict of the model contract (with `with_points`, its forced alignment "text_points"
        [T]); raises BadItem for unusable data."""
        meta = self.meta(i)
        shard = int(self.shard_of[i])
        tensor_path = self.path / f"{shard_name(shard)}.safetensors"
        try:
            handle = self._cached(self._handles, shard, lambda: safe_open(str(tensor_path), framework="pt"))
            start, end = (int(x) for x in handle.get_slice("offsets")[self.position[i]: self.position[i] + 2])
            latents = handle.get_slice("latents")[start:end].float()  # half-precision stores are widened here
            semantic = handle.get_slice("semantic")[start:end].float() if with_semantic else None
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise BadItem(f"corrupt: {tensor_path.name}: {err}") from None
        if latents.dim() != 2 or latents.shape[1] != self.latent_dim or latents.shape[0] != meta["num_frames"]:
            raise BadItem(f"corrupt: latents shape {tuple(latents.shape)}, expected [{meta['num_frames']}, "
                          f"{self.latent_dim}]")
        if not torch.isfinite(latents).all():
            raise BadItem("non-finite: latents contain NaN or inf")
        item = {"id": meta["id"], "text": meta["text"], "latents": latents}
        if with_points:
            item["text_points"] = self._points(shard, start, end)
        if meta.get("speaker"):
            item["speaker"] = meta["speaker"]
        if semantic is not None:
            if not torch.isfinite(semantic).all():
                raise BadItem("non-finite: semantic features contain NaN or inf")
            item["semantic"] = semantic
        return item
