"""Task sampler (TTS:ASR ratio over any number of datasets) and frame-budget dynamic batching, both resumable.

Every rank owns one sampler. Tasks are dealt from shuffled decks (e.g. 100 TTS + 20 ASR cards for 5:1), so the
ratio holds exactly every deck instead of drifting by a few percent as independent draws would (at 5:1 the
ratio of 6,000 i.i.d. draws has a 3.5 % standard deviation). The shuffles and the choice among datasets of a task
come from the rank's own PCG64 generator; the item comes from
its stream's per-epoch permutation, which is identical on all ranks and split rank::world, so ranks never share
items within an epoch. The whole position (generator state, epoch and cursor per stream, a held-back item) is a
small JSON-able dict, so a resumed run continues with exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from holitok_slm.train.bad_items import BadItemLog
from holitok_slm.train.latent_store import BadItem, LatentStore


def deal_counts(probabilities: np.ndarray, deck_size: int) -> np.ndarray:
    """Task indices of one deck: each task's count is its share of `deck_size`, rounded by largest remainder."""
    exact = probabilities * deck_size
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: deck_size - counts.sum()]:
        counts[i] += 1
    return np.repeat(np.arange(len(probabilities)), counts)


@dataclass
class Stream:
    """The items of one dataset usable for one task."""

    name: str
    task: str
    dataset: int
    indices: np.ndarray
    weight: float


class TaskSampler:
    def __init__(self, streams: list[Stream], task_ratio: dict[str, float], seed: int, rank: int = 0,
                 world_size: int = 1, deck_size: int = 120, split_items: bool = True):
        self.streams = streams
        self.tasks = [t for t, r in task_ratio.items() if r > 0]
        for task in self.tasks:
            if not any(s.task == task and len(s.indices) for s in streams):
                raise ValueError(f"task {task!r} has ratio {task_ratio[task]} but no dataset provides usable "
                                 f"{task} items; add one under data.datasets or set its ratio to 0")
        ratios = np.array([task_ratio[t] for t in self.tasks], dtype=np.float64)
        self.base_deck = deal_counts(ratios / ratios.sum(), deck_size)
        self.task_streams = {}
        for task in self.tasks:
            members = [i for i, s in enumerate(streams) if s.task == task and len(s.indices)]
            weights = np.array([streams[i].weight for i in members], dtype=np.float64)
            self.task_streams[task] = (members, np.cumsum(weights / weights.sum()))
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.split_items = split_items  # False: the streams hold this rank's own shards (data.shard_per_rank)
        self.rng = np.random.Generator(np.random.PCG64([seed, rank]))
        self.epoch = [0] * len(streams)
        self.cursor = [0] * len(streams)
        self.deck: list[int] = []
        self.deck_position = 0
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    @staticmethod
    def _pick(cdf: np.ndarray, u: float) -> int:
        return min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)

    def _order(self, s: int) -> np.ndarray:
        cached = self._orders.get(s)
        if cached is not None and cached[0] == self.epoch[s]:
            return cached[1]
        indices = self.streams[s].indices
        perm = np.random.Generator(np.random.PCG64([self.seed, s, self.epoch[s], 7919])).permutation(len(indices))
        # Tiny datasets (fewer items than ranks) are shared rather than leaving a rank with nothing.
        split = self.split_items and len(perm) >= self.world_size
        mine = perm[self.rank::self.world_size] if split else perm
        order = indices[mine]
        self._orders[s] = (self.epoch[s], order)
        return order

    def draw(self) -> tuple[int, int]:
        """(stream index, item index in that stream's dataset)."""
        if self.deck_position >= len(self.deck):
            self.deck = self.rng.permutation(self.base_deck).tolist()
            self.deck_position = 0
        task = self.tasks[self.deck[self.deck_position]]
        self.deck_position += 1
        members, cdf = self.task_streams[task]
        s = members[self._pick(cdf, self.rng.random())] if len(members) > 1 else members[0]
        order = self._order(s)
        if self.cursor[s] >= len(order):
            self.epoch[s] += 1
            self.cursor[s] = 0
            order = self._order(s)
        item = int(order[self.cursor[s]])
        self.cursor[s] += 1
        return s, item

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "epoch": list(self.epoch), "cursor": list(self.cursor),
                "deck": list(self.deck), "deck_position": self.deck_position,
                "rank": self.rank, "world_size": self.world_size, "seed": self.seed, "split_items": self.split_items,
                "streams": [s.name for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        if (state["streams"] != [s.name for s in self.streams] or state["world_size"] != self.world_size
                or state.get("split_items", True) != self.split_items):
            raise ValueError(
                f"sampler state does not fit this run: saved streams {state['streams']} on {state['world_size']} "
                f"ranks (shard_per_rank {not state.get('split_items', True)}), now {[s.name for s in self.streams]} "
                f"on {self.world_size} ranks (shard_per_rank {not self.split_items}). Resume with the same data "
                "section and number of processes (or start a new run initialised from the checkpoint's model).")
        self.rng.bit_generator.state = state["rng"]
        self.epoch = list(state["epoch"])
        self.cursor = list(state["cursor"])
        self.deck = list(state["deck"])
        self.deck_position = int(state["deck_position"])
        self._orders.clear()


class FrameBudgetBatcher:
    """Draws items until the padded batch (items x longest item, in latent frames) would exceed the budget; the item
    that did not fit opens the next batch. Items that fail to load are logged in `bad_items` and replaced.

    With `sort_pool_batches` > 0 it draws that many batches' worth of items (x `max_items_per_batch`) at once, sorts
    them by length, cuts them into batches under the same budget and serves those in a seeded random order: items in a
    batch are then of similar length, so far fewer of its frames are padding (on the demo corpus 2 % instead of 39 %,
    1.5x the real frames per batch). The task ratio holds over each pool; a batch may be all one task.

    With `tts_prompt_share` > 0 that share of the TTS items is drawn with a prompt: another item of the same speaker
    (a third entry in the item's reference), loaded as the item's "prompt" and laid out before it
    (holitok_slm/layout.py training_layout), as a voice prompt from another recording is in zero-shot cloning."""

    def __init__(self, sampler: TaskSampler, stores: list[LatentStore], max_frames_per_batch: int,
                 max_items_per_batch: int, bad_items: BadItemLog, with_semantic: bool = False,
                 max_consecutive_bad: int = 10000, sort_pool_batches: int = 0, with_points: bool = False,
                 tts_prompt_share: float = 0.0):
        self.sampler, self.stores = sampler, stores
        self.max_frames, self.max_items = max_frames_per_batch, max_items_per_batch
        self.bad_items, self.with_semantic, self.with_points = bad_items, with_semantic, with_points
        self.max_consecutive_bad = max_consecutive_bad
        self.sort_pool_batches = sort_pool_batches
        self.tts_prompt_share = tts_prompt_share
        self._speaker_groups: dict[int, tuple[dict[int, str], dict[str, np.ndarray]]] = {}
        self.pending: tuple[int, ...] | None = None
        self.ready: list[list[tuple[int, ...]]] = []  # sorted-pool batches still to serve, in serving order
        self.pools = 0

    def next_batch(self) -> list[dict]:
        if self.sort_pool_batches <= 0:
            return self._next_unsorted_batch()
        while True:
            if not self.ready:
                self._fill_pool()
            items = [item for item in map(self._load, self.ready.pop(0)) if item is not None]
            if items:
                return items

    def _speakers(self, s: int) -> tuple[dict[int, str], dict[str, np.ndarray]]:
        """Stream `s`'s items by speaker (read from the store's metadata once, when first needed)."""
        if s not in self._speaker_groups:
            stream = self.sampler.streams[s]
            store = self.stores[stream.dataset]
            of_item = {int(i): store.meta(int(i)).get("speaker") for i in stream.indices}
            groups: dict[str, list[int]] = {}
            for i, speaker in of_item.items():
                if speaker:
                    groups.setdefault(speaker, []).append(i)
            self._speaker_groups[s] = (of_item, {k: np.array(v) for k, v in groups.items()})
        return self._speaker_groups[s]

    def _draw(self) -> tuple[int, ...]:
        """The sampler's next (stream, item), with a prompt item of the same speaker appended for about
        `tts_prompt_share` of the TTS items (drawn from the sampler's generator, so a resumed run draws the same)."""
        ref = self.sampler.draw()
        if self.tts_prompt_share <= 0 or self.sampler.streams[ref[0]].task != "tts":
            return ref
        if self.sampler.rng.random() >= self.tts_prompt_share:
            return ref
        of_item, groups = self._speakers(ref[0])
        group = groups.get(of_item.get(ref[1]) or "", np.zeros(0, dtype=np.int64))
        others = group[group != ref[1]]
        if not len(others):
            return ref
        return (*ref, int(others[self.sampler.rng.integers(len(others))]))

    def _ref_frames(self, ref: tuple[int, ...]) -> tuple[str, int]:
        store = self.stores[self.sampler.streams[ref[0]].dataset]
        return store.ids[ref[1]], int(sum(store.num_frames[i] for i in ref[1:]))

    def _fits(self, count: int, longest: int, frames: int) -> bool:
        """Whether one more item of `frames` fits a batch of `count` items whose longest has `longest` frames."""
        return not count or (count < self.max_items and max(longest, frames) * (count + 1) <= self.max_frames)

    def _load(self, ref: tuple[int, ...]) -> dict | None:
        """The item with its task (and its prompt item, when the reference names one that loads), or None after
        logging it as bad."""
        stream = self.sampler.streams[ref[0]]
        store = self.stores[stream.dataset]
        item = self._load_one(store, ref[1], stream.task)
        if item is None:
            return None
        item["task"] = stream.task
        if len(ref) > 2 and store.ids[ref[2]] not in self.bad_items:
            prompt = self._load_one(store, ref[2], stream.task)  # a bad prompt is logged; the item goes alone
            if prompt is not None:
                item["prompt"] = prompt
        return item

    def _load_one(self, store: LatentStore, index: int, task: str) -> dict | None:
        try:
            item = store.load(index, with_semantic=self.with_semantic, with_points=self.with_points and task == "tts")
            if not item["text"].strip():
                raise BadItem("empty-text: transcript is empty")
        except BadItem as err:
            self.bad_items.add(store.ids[index], str(err))
            return None
        return item

    def _check_bad_run(self, bad_run: int) -> None:
        if bad_run >= self.max_consecutive_bad:
            raise RuntimeError(f"{bad_run} consecutive bad items drawn; the data is unusable:\n"
                               f"{self.bad_items.report(limit=20)}")

    def _next_unsorted_batch(self) -> list[dict]:
        items: list[dict] = []
        longest = 0
        bad_run = 0
        while True:
            ref, self.pending = (self.pending or self._draw()), None
            item_id, frames = self._ref_frames(ref)
            if item_id in self.bad_items:
                bad_run += 1
            else:
                if not self._fits(len(items), longest, frames):
                    self.pending = ref
                    return items
                item = self._load(ref)
                if item is None:
                    bad_run += 1
                else:
                    items.append(item)
                    longest = max(longest, frames)
                    bad_run = 0
            self._check_bad_run(bad_run)

    def _fill_pool(self) -> None:
        pool, bad_run = [], 0
        while len(pool) < self.sort_pool_batches * self.max_items:
            ref = self._draw()
            item_id, frames = self._ref_frames(ref)
            if item_id in self.bad_items:
                bad_run += 1
                self._check_bad_run(bad_run)
            else:
                pool.append((frames, ref))
                bad_run = 0
        pool.sort(key=lambda entry: entry[0])  # stable: equal lengths keep their draw order
        batches: list[list[tuple[int, ...]]] = []
        longest = 0
        for frames, ref in pool:
            if not batches or not self._fits(len(batches[-1]), longest, frames):
                batches.append([])
                longest = 0
            batches[-1].append(ref)
            longest = max(longest, frames)
        order = np.random.Generator(np.random.PCG64([self.sampler.seed, self.sampler.rank, self.pools]))
        self.ready = [batches[i] for i in order.permutation(len(batches))]
        self.pools += 1

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "pending": list(self.pending) if self.pending else None,
                "ready": [[list(ref) for ref in batch] for batch in self.ready], "pools": self.pools}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.pending = tuple(state["pending"]) if state["pending"] else None
        self.ready = [[tuple(ref) for ref in batch] for batch in state.get("ready", [])]
        self.pools = state.get("pools", 0)
