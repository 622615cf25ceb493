"""Task sampler ratio, per-rank disjointness, frame-budget batching, resumable positions, static bad-item filtering."""
from __future__ import annotations

import numpy as np
import pytest

from holitok_slm.train.bad_items import BadItemLog
from holitok_slm.train.config import LatentDataConfig
from holitok_slm.train.data import build_batcher, open_streams
from holitok_slm.train.latent_store import LatentStore
from holitok_slm.train.task_deck import Stream, TaskSampler
from data_prep.toy_store import write_toy_store


def make_streams(sizes_by_task: dict[str, list[int]]) -> list[Stream]:
    streams, dataset = [], 0
    for task, sizes in sizes_by_task.items():
        for size in sizes:
            streams.append(Stream(f"d{dataset}:{task}", task, dataset, np.arange(size), weight=float(size)))
            dataset += 1
    return streams


def test_task_ratio_is_five_to_one_over_6000_draws_with_many_datasets():
    # one TTS corpus and four ASR corpora of very different sizes, as in the paper's mixture
    streams = make_streams({"tts": [5000], "asr": [300, 40, 2000, 7]})
    sampler = TaskSampler(streams, {"tts": 5, "asr": 1}, seed=3)
    tasks = [streams[sampler.draw()[0]].task for _ in range(6000)]
    ratio = tasks.count("tts") / tasks.count("asr")
    assert abs(ratio - 5.0) / 5.0 < 0.02, ratio
    # the order is random (not a fixed pattern), and ASR datasets are drawn in proportion to their size
    other = TaskSampler(streams, {"tts": 5, "asr": 1}, seed=4)
    assert tasks[:120] != [streams[other.draw()[0]].task for _ in range(120)]
    assert len({tuple(tasks[i:i + 6]) for i in range(0, 600, 6)}) > 3  # not one repeated pattern
    assert all(abs(tasks[:n].count("tts") / n - 5 / 6) < 0.05 for n in (120, 600, 1200))  # holds at any scale
    counts = np.bincount([s for s in (sampler.draw()[0] for _ in range(60000)) if streams[s].task == "asr"],
                         minlength=len(streams))[1:]
    expected = np.array([300, 40, 2000, 7]) / 2347
    assert np.allclose(counts / counts.sum(), expected, atol=0.02)


def test_other_ratios_and_zero_ratio():
    streams = make_streams({"tts": [50], "asr": [50]})
    sampler = TaskSampler(streams, {"tts": 1, "asr": 3}, seed=0)
    tasks = [streams[sampler.draw()[0]].task for _ in range(8000)]
    assert abs(tasks.count("asr") / len(tasks) - 0.75) < 0.02
    only_tts = TaskSampler(streams, {"tts": 1, "asr": 0}, seed=0)
    assert {streams[only_tts.draw()[0]].task for _ in range(500)} == {"tts"}
    with pytest.raises(ValueError, match="no dataset provides"):
        TaskSampler(make_streams({"tts": [10]}), {"tts": 5, "asr": 1}, seed=0)


def test_ranks_see_disjoint_items_within_an_epoch_and_every_item_once():
    streams = make_streams({"tts": [101]})
    seen = []
    for rank in range(3):
        sampler = TaskSampler(streams, {"tts": 1}, seed=9, rank=rank, world_size=3)
        seen.append([sampler.draw()[1] for _ in range(len(range(rank, 101, 3)))])
    flat = [i for part in seen for i in part]
    assert sorted(flat) == list(range(101))
    # the next epoch is a different permutation
    sampler = TaskSampler(streams, {"tts": 1}, seed=9)
    first = [sampler.draw()[1] for _ in range(101)]
    second = [sampler.draw()[1] for _ in range(101)]
    assert sorted(second) == list(range(101)) and first != second


def test_sampler_state_round_trip_continues_identically():
    streams = make_streams({"tts": [37, 11], "asr": [13]})
    sampler = TaskSampler(streams, {"tts": 5, "asr": 1}, seed=1)
    for _ in range(123):
        sampler.draw()
    state = sampler.state_dict()
    expected = [sampler.draw() for _ in range(200)]
    restored = TaskSampler(streams, {"tts": 5, "asr": 1}, seed=1)
    restored.load_state_dict(state)
    assert [restored.draw() for _ in range(200)] == expected
    with pytest.raises(ValueError, match="does not fit"):
        TaskSampler(streams, {"tts": 5, "asr": 1}, seed=1, rank=0, world_size=2).load_state_dict(state)


def test_frame_budget_batches_and_resume(tmp_path):
    write_toy_store(tmp_path / "store", num_items=40, frames=(10, 90), seed=2)
    data = LatentDataConfig(datasets=[{"name": "toy", "latents": str(tmp_path / "store")}],
                      max_frames_per_batch=400, max_items_per_batch=6, max_frames_per_item=200)
    batcher = build_batcher(data, seed=5, rank=0, world_size=1, bad_items=BadItemLog())
    sizes = []
    for _ in range(30):
        batch = batcher.next_batch()
        longest = max(item["latents"].shape[0] for item in batch)
        assert len(batch) <= 6 and (len(batch) == 1 or longest * len(batch) <= 400)
        sizes.append(len(batch))
    assert max(sizes) > 1
    state = batcher.state_dict()
    expected = [[item["id"] for item in batcher.next_batch()] for _ in range(10)]
    again = build_batcher(data, seed=5, rank=0, world_size=1, bad_items=BadItemLog())
    again.load_state_dict(state)
    assert [[item["id"] for item in again.next_batch()] for _ in range(10)] == expected


def test_bad_items_are_filtered_or_skipped_and_logged(tmp_path):
    write_toy_store(tmp_path / "store", num_items=12, seed=4, plant_bad=True, long_frames=300)
    data = LatentDataConfig(datasets=[{"name": "toy", "latents": str(tmp_path / "store"), "tasks": ["tts"]}],
                      task_ratio={"tts": 1, "asr": 0}, max_frames_per_batch=400, max_frames_per_item=200)
    log = BadItemLog()
    stores, streams = open_streams(data, log)
    assert set(log.items) == {"bad-long", "bad-short"}  # known from the index alone
    batcher = build_batcher(data, seed=0, rank=0, world_size=1, bad_items=log)
    ids = {item["id"] for _ in range(12) for item in batcher.next_batch()}
    assert not ids & {"bad-nan", "bad-long", "bad-empty-text", "bad-short"}
    assert {k: v.split(":")[0] for k, v in log.items.items()} == {
        "bad-nan": "non-finite", "bad-long": "over-long", "bad-empty-text": "empty-text", "bad-short": "too-short"}
    assert "4 bad items" in log.report()


def test_store_reports_missing_and_corrupt_shards(tmp_path):
    write_toy_store(tmp_path / "store", num_items=25, shard_size=10, seed=1)
    (tmp_path / "store" / "shard-00002.json").unlink()
    store = LatentStore(tmp_path / "store")
    assert store.missing_shards == [2] and len(store) == 20
    (tmp_path / "store" / "shard-00001.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="corrupt"):
        store.load(15)
    assert store.load(3)["latents"].shape[1] == 16


def test_shard_per_rank_reads_only_own_shards_and_ranks_never_share_items(tmp_path):
    import json as _json

    from holitok_slm.train.latent_store import LatentStore

    write_toy_store(tmp_path / "store", num_items=47, frames=(10, 40), shard_size=5, seed=3)  # 10 shards
    whole = LatentStore(tmp_path / "store")
    data = LatentDataConfig(datasets=[{"name": "toy", "latents": str(tmp_path / "store")}],
                            task_ratio={"tts": 1, "asr": 1}, max_frames_per_batch=200, max_frames_per_item=100,
                            shard_per_rank=True)
    seen = []
    for rank in range(3):
        stores, _ = open_streams(data, BadItemLog(), rank=rank, world_size=3)
        store = stores[0]
        assert store.shards == list(range(rank, 10, 3))
        assert set(store.shard_of.tolist()) == set(store.shards)
        # the per-item facts equal the whole store's for the same items
        keys = list(zip(store.shard_of.tolist(), store.position.tolist()))
        lookup = {k: i for i, k in enumerate(zip(whole.shard_of.tolist(), whole.position.tolist()))}
        assert [int(whole.num_frames[lookup[k]]) for k in keys] == store.num_frames.tolist()
        batcher = build_batcher(data, seed=1, rank=rank, world_size=3, bad_items=BadItemLog())
        drawn = {item["id"] for _ in range(40) for item in batcher.next_batch()}
        own = {store.ids[i] for i in range(len(store))}
        assert drawn <= own and len(drawn) == len(own)  # 40 batches cover the rank's own items (two tasks)
        seen.append(own)
    assert not (seen[0] & seen[1]) and not (seen[1] & seen[2]) and not (seen[0] & seen[2])
    assert len(seen[0] | seen[1] | seen[2]) == 47
    # Frames and tasks come from the tensors: the JSON texts are not parsed to open a store.
    for shard in range(10):
        path = tmp_path / "store" / f"shard-{shard:05d}.json"
        meta = _json.loads(path.read_text())
        for item in meta["items"]:
            item["num_frames"] = -1
        path.write_text(_json.dumps(meta))
    assert LatentStore(tmp_path / "store", shards=slice(1, None, 3)).num_frames.min() >= 10
    # more ranks than shards: a clear error, not an idle rank
    with pytest.raises(ValueError, match="owns no item"):
        open_streams(data, BadItemLog(), rank=11, world_size=12)
    # a sampler state saved without shard_per_rank does not resume with it
    plain = LatentDataConfig(datasets=data.datasets, task_ratio=data.task_ratio, max_frames_per_batch=200,
                             max_frames_per_item=100)
    state = build_batcher(plain, seed=1, rank=0, world_size=3, bad_items=BadItemLog()).state_dict()
    with pytest.raises(ValueError, match="shard_per_rank"):
        build_batcher(data, seed=1, rank=0, world_size=3, bad_items=BadItemLog()).load_state_dict(state)


def test_sorted_pool_batches_pad_less_keep_the_items_and_resume(tmp_path):
    write_toy_store(tmp_path / "store", num_items=60, frames=(10, 90), seed=3)
    spec = {"name": "toy", "latents": str(tmp_path / "store")}
    common = dict(datasets=[spec], max_frames_per_batch=300, max_items_per_batch=8, max_frames_per_item=200)

    def padding_share(batcher, batches):
        real = padded = 0
        ids = []
        for _ in range(batches):
            batch = batcher.next_batch()
            lengths = [item["latents"].shape[0] for item in batch]
            assert len(batch) <= 8 and (len(batch) == 1 or max(lengths) * len(batch) <= 300)
            real, padded = real + sum(lengths), padded + max(lengths) * len(lengths)
            ids += [(item["id"], item["task"]) for item in batch]
        return 1 - real / padded, ids

    plain, _ = padding_share(build_batcher(LatentDataConfig(**common), 5, 0, 1, BadItemLog()), 40)
    data = LatentDataConfig(**common, sort_pool_batches=4)
    grouped, _ = padding_share(build_batcher(data, 5, 0, 1, BadItemLog()), 40)
    assert plain > 0.15 and grouped < plain / 3
    # The sampler's draws, only grouped differently: the first pool is exactly the first 4 x 8 draws.
    batcher = build_batcher(data, 5, 0, 1, BadItemLog())
    first_pool = [(item["id"], item["task"]) for item in batcher.next_batch()]
    while batcher.ready:
        first_pool += [(item["id"], item["task"]) for item in batcher.next_batch()]
    reference = build_batcher(LatentDataConfig(**common), 5, 0, 1, BadItemLog())
    draws = [reference.sampler.draw() for _ in range(32)]
    expected_pool = [(reference.stores[reference.sampler.streams[stream].dataset].ids[index],
                      reference.sampler.streams[stream].task) for stream, index in draws]
    assert sorted(first_pool) == sorted(expected_pool)
    # resume mid-pool continues identically
    batcher = build_batcher(data, 5, 0, 1, BadItemLog())
    for _ in range(3):
        batcher.next_batch()
    state = batcher.state_dict()
    expected = [[item["id"] for item in batcher.next_batch()] for _ in range(12)]
    again = build_batcher(data, 5, 0, 1, BadItemLog())
    again.load_state_dict(state)
    assert [[item["id"] for item in again.next_batch()] for _ in range(12)] == expected


def test_tts_prompt_share_gives_tts_items_a_prompt_of_their_speaker_and_resumes(tmp_path):
    write_toy_store(tmp_path / "store", num_items=30, frames=(10, 60), seed=4)  # speakers spk0..spk2
    store = LatentStore(tmp_path / "store")
    speaker = {store.ids[i]: store.meta(i)["speaker"] for i in range(len(store))}
    common = dict(datasets=[{"name": "toy", "latents": str(tmp_path / "store")}], task_ratio={"tts": 1, "asr": 1},
                  max_frames_per_batch=400, max_items_per_batch=6, max_frames_per_item=200, sort_pool_batches=2)
    batcher = build_batcher(LatentDataConfig(**common, tts_prompt_share=0.5), 5, 0, 1, BadItemLog())
    prompted = {"tts": 0, "asr": 0}
    total = {"tts": 0, "asr": 0}
    for _ in range(40):
        batch = batcher.next_batch()
        frames = [item["latents"].shape[0] + (item["prompt"]["latents"].shape[0] if "prompt" in item else 0)
                  for item in batch]
        assert len(batch) == 1 or max(frames) * len(batch) <= 400  # the prompt counts in the frame budget
        for item in batch:
            total[item["task"]] += 1
            if "prompt" in item:
                prompted[item["task"]] += 1
                assert item["prompt"]["id"] != item["id"] and speaker[item["prompt"]["id"]] == speaker[item["id"]]
    assert prompted["asr"] == 0 and 0.3 < prompted["tts"] / total["tts"] < 0.7
    state = batcher.state_dict()
    expected = [[(item["id"], item.get("prompt", {}).get("id")) for item in batcher.next_batch()] for _ in range(8)]
    again = build_batcher(LatentDataConfig(**common, tts_prompt_share=0.5), 5, 0, 1, BadItemLog())
    again.load_state_dict(state)
    assert [[(item["id"], item.get("prompt", {}).get("id")) for item in again.next_batch()]
            for _ in range(8)] == expected
    # Share 0 draws exactly what a batcher without the option draws.
    plain = build_batcher(LatentDataConfig(**common), 5, 0, 1, BadItemLog())
    zero = build_batcher(LatentDataConfig(**common, tts_prompt_share=0.0), 5, 0, 1, BadItemLog())
    assert [[item["id"] for item in plain.next_batch()] for _ in range(6)] == \
        [[item["id"] for item in zero.next_batch()] for _ in range(6)]
    with pytest.raises(ValueError, match="tts_prompt_share"):
        LatentDataConfig(**common, tts_prompt_share=1.5)
