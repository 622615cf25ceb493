"""Opens the latent stores named in `data:` as sampler streams (logging unusable items) and batches them."""
from __future__ import annotations

import numpy as np

from holitok_slm.train.bad_items import BadItemLog
from holitok_slm.train.config import LatentDataConfig
from holitok_slm.train.latent_store import TASK_BITS, LatentStore
from holitok_slm.train.task_deck import FrameBudgetBatcher, Stream, TaskSampler


def open_streams(data: LatentDataConfig, bad_items: BadItemLog, latent_dim: int | None = None, rank: int = 0,
                 world_size: int = 1) -> tuple[list[LatentStore], list[Stream]]:
    """Stores and their (dataset, task) streams (with `data.shard_per_rank`: only this rank's shards). Items skipped
    at extraction time, items too short or too long, and items of deleted shards are recorded in `bad_items` and
    never drawn."""
    if not data.datasets:
        raise ValueError("data.datasets is empty: name at least one latent store (see docs/training.md)")
    stores, streams = [], []
    for d, spec in enumerate(data.datasets):
        store = LatentStore(spec.latents, shards=slice(rank, None, world_size) if data.shard_per_rank else None)
        if data.shard_per_rank and not len(store):
            raise ValueError(f"dataset {spec.name}: rank {rank} of {world_size} owns no item of {spec.latents} "
                             f"({store.index['num_shards']} shards); with data.shard_per_rank every rank needs shards: "
                             "extract with a smaller --shard_size, or turn data.shard_per_rank off")
        if latent_dim is not None and store.latent_dim != latent_dim:
            raise ValueError(f"dataset {spec.name}: latents are {store.latent_dim}-dim but model.latent_dim is "
                             f"{latent_dim}; extract with the matching tokenizer")
        if data.use_semantic_features and not store.semantic_dim:
            raise ValueError(f"dataset {spec.name}: data.use_semantic_features is set but {spec.latents} has no "
                             "semantic features; re-extract with --semantic")
        for skipped in store.index.get("skipped", []) if rank == 0 or not data.shard_per_rank else []:
            bad_items.add(skipped["id"], skipped["reason"])
        for shard in store.missing_shards:
            bad_items.add(f"{spec.name}/shard-{shard:05d}", "missing: shard metadata deleted after extraction")
        usable = np.ones(len(store), dtype=bool)
        for mask, reason in (
            (store.num_frames > data.max_frames_per_item, f"over-long: more than {data.max_frames_per_item} frames"),
            (store.num_frames < data.min_frames_per_item, f"too-short: fewer than {data.min_frames_per_item} frames"),
        ):
            for i in np.flatnonzero(mask & usable):
                bad_items.add(store.ids[i], f"{reason} ({store.num_frames[i]})")
            usable &= ~mask
        for task in spec.tasks:
            eligible = np.flatnonzero(usable & ((store.task_bits & TASK_BITS[task]) > 0))
            weight = float(len(eligible)) if spec.weight is None else float(spec.weight)
            streams.append(Stream(name=f"{spec.name}:{task}", task=task, dataset=d, indices=eligible, weight=weight))
        stores.append(store)
    return stores, streams


def build_batcher(data: LatentDataConfig, seed: int, rank: int, world_size: int, bad_items: BadItemLog,
                  latent_dim: int | None = None) -> FrameBudgetBatcher:
    stores, streams = open_streams(data, bad_items, latent_dim, rank, world_size)
    return make_batcher(data, stores, streams, seed, rank, world_size, bad_items)


def make_batcher(data: LatentDataConfig, stores: list[LatentStore], streams: list[Stream], seed: int, rank: int,
                 world_size: int, bad_items: BadItemLog, with_points: bool = False) -> FrameBudgetBatcher:
    """This rank's batches over streams already opened (the trainer opens them once for other uses too);
    `with_points`: TTS items carry their forced alignment (a model with a forced text pointer)."""
    sampler = TaskSampler(streams, data.task_ratio, seed=seed, rank=rank, world_size=world_size,
                          split_items=not data.shard_per_rank)
    return FrameBudgetBatcher(sampler, stores, data.max_frames_per_batch, data.max_items_per_batch, bad_items,
                              with_semantic=data.use_semantic_features, sort_pool_batches=data.sort_pool_batches,
                              with_points=with_points, tts_prompt_share=data.tts_prompt_share)
