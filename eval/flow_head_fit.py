"""Can a flow head learn real latent patches when handed a perfect condition? Tests the DiT apart from the backbone.

    python -m eval.flow_head_fit --latents outputs/demo/latents/train --config configs/unified/train_tiny.yaml \
        [--set model.dit.hidden_size=128 ...] [--set train.flow_head_lr_scale=3.0] [--items 24] [--steps 1500] \
        [--batch 256] [--out outputs/flow_head_fit.json]

Each patch of `--items` stored utterances gets its own fixed random condition vector: a stand-in for a backbone that
knows exactly where it is. The DiT head of the config (its width, depth, patch size) is trained on those
patches with the model's own flow-matching loss (`DiTHead.flow_matching_errors`), its previous patch as history,
the config's CFG dropout, AdamW at `train.learning_rate` x `train.flow_head_lr_scale` with the config's warmup and
cosine. Every `--eval_every` steps it reports the mean squared distance (normalised latents, like the unified model's)
of the sampled patch to the true one, deterministic (zero noise, no CFG) and sampled (temperature 1, no CFG).

A head that cannot bring these near 0 cannot learn TTS from any backbone: this is how docs/learning.md section 12
found that the demo's flow head learnt too slowly at the backbone's learning rate.

    python -m eval.flow_head_fit --latents outputs/demo/latents/train --config configs/unified/train_tiny.yaml \
        --conditions_from outputs/demo/unified/final --items 4320 --holdout 320 [--fresh_head]

With `--conditions_from`, the conditions are a trained unified model's own (its frozen backbone and bridge,
teacher-forced on each utterance's true text and audio, as in training) and the head starts from that model's DiT
(or fresh). The last `--holdout` utterances are never trained on and are scored separately. If more head training
brings the distance far down, the joint run had under-trained its head; if not, the conditions do not carry the
next patch, and the backbone is what must learn more.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from holitok_slm.model.dit_head import sample_patch
from holitok_slm.model.dit_head import DiTHead
from holitok_slm.train.config import load_training_run
from holitok_slm.train.latent_store import LatentStore
from holitok_slm.train.optim import build_optimizer, build_scheduler

from .report import write_json


class _HeadOnly(nn.Module):
    """The DiT under the attribute name the unified model gives it, so train.flow_head_lr_scale applies to it."""

    def __init__(self, dit: DiTHead):
        super().__init__()
        self.dit = dit


def patch_dataset(store: LatentStore, items: int, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `items` utterances' whole patches, globally normalised like UnifiedModel.fit_data_statistics:
    targets [N, P, D] and each one's previous patch (zeros for an utterance's first) [N, P, D]."""
    latents = [store.load(i)["latents"] for i in range(min(items, len(store)))]
    frames = torch.cat(latents).double()
    mean, std = frames.mean(), frames.std()
    targets, history = [], []
    for item in latents:
        count = item.shape[0] // patch_size
        if count == 0:
            continue
        patches = ((item[:count * patch_size] - mean) / std).float().view(count, patch_size, -1)
        targets.append(patches)
        history.append(torch.cat([torch.zeros_like(patches[:1]), patches[:-1]]))
    if not targets:
        raise ValueError(f"{store.path}: no utterance among the first {items} has a whole patch of {patch_size} frames")
    return torch.cat(targets), torch.cat(history)


@torch.no_grad()
def distances(dit: DiTHead, conditions: torch.Tensor, targets: torch.Tensor, history: torch.Tensor,
              generator: torch.Generator) -> dict[str, float]:
    """Mean squared distance to the true patches of the deterministic (zero-noise) and a sampled Euler solution."""
    dit.eval()
    noise = torch.randn(targets.shape, generator=generator)
    out = {}
    for name, start in (("deterministic", torch.zeros_like(targets)), ("sampled", noise)):
        guess = sample_patch(dit, conditions, history, start, steps=10, cfg_strength=0.0)
        out[name] = float((guess - targets).pow(2).mean())
    dit.train()
    return out


@torch.no_grad()
def model_patches(model_dir: str | Path, store: LatentStore, items: int, batch_items: int = 8):
    """A trained unified model's teacher-forced flow inputs on the store's first `items` utterances (whole patches):
    targets, history, conditions, each patch's utterance index, and the model (its DiT can start the head)."""
    from tqdm import tqdm

    from holitok_slm.model.unified import UnifiedModel
    from holitok_slm.train.latent_store import BadItem

    model = UnifiedModel.from_pretrained(model_dir).eval()
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    count = min(items, len(store))
    for start in tqdm(range(0, count, batch_items), desc="conditions", unit="batch"):
        loaded = []
        for i in range(start, min(count, start + batch_items)):
            try:
                loaded.append((i, {**store.load(i), "task": "tts"}))
            except BadItem:
                continue
        if not loaded:
            continue
        batch = model.collate([item for _, item in loaded])
        hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"], batch["latents"],
                                     batch["frame_mask"], batch["audio_offset"], batch["num_patches"])
        target, condition, history, weights = model.flow_inputs(hidden, batch["latents"], batch["frame_mask"],
                                                                batch["audio_offset"], batch["num_patches"],
                                                                batch["is_tts"])
        owner = torch.repeat_interleave(torch.tensor([i for i, _ in loaded]), batch["num_patches"])
        whole = weights.all(-1)
        for part, value in zip(parts, (target, history, condition, owner)):
            part.append(value[whole])
    return (*(torch.cat(p) for p in parts), model)


def fit(latents: str | Path, config: str | Path, overrides: list[str], items: int, steps: int, batch: int,
        eval_every: int, eval_patches: int = 256, seed: int = 0, conditions_from: str | Path | None = None,
        holdout: int = 0, fresh_head: bool = False) -> dict:
    run = load_training_run(config, list(overrides) + [f"train.max_steps={steps}"])
    cfg = run.model
    torch.manual_seed(seed)
    store = LatentStore(latents)
    if conditions_from is None:
        if holdout:
            raise ValueError("--holdout needs --conditions_from (random conditions cannot generalise)")
        targets, history = patch_dataset(store, items, cfg.patch_size)
        conditions = torch.randn(targets.shape[0], cfg.dit.hidden_size)
        owner = torch.zeros(targets.shape[0], dtype=torch.long)
        head = _HeadOnly(DiTHead(cfg.dit, targets.shape[-1], cfg.patch_size))
    else:
        targets, history, conditions, owner, model = model_patches(conditions_from, store, items)
        cfg = model.config
        head = _HeadOnly(DiTHead(cfg.dit, targets.shape[-1], cfg.patch_size))
        if not fresh_head:
            head.dit.load_state_dict(model.dit.state_dict())
    held = owner >= (int(owner.max()) + 1 - holdout) if holdout else torch.zeros_like(owner, dtype=torch.bool)
    trainable = (~held).nonzero().squeeze(1)
    if trainable.numel() == 0:
        raise ValueError(f"--holdout {holdout} leaves no utterance to train on")
    optimizer = build_optimizer(head, run.train)
    scheduler = build_scheduler(optimizer, run.train)
    probes = {"": trainable[torch.linspace(0, trainable.numel() - 1, min(eval_patches, trainable.numel())).long()]}
    if holdout:
        unseen = held.nonzero().squeeze(1)
        probes["held_out_"] = unseen[torch.linspace(0, unseen.numel() - 1, min(eval_patches, unseen.numel())).long()]
    generator = torch.Generator().manual_seed(seed)

    def evaluate() -> dict[str, float]:
        return {prefix + k: v for prefix, probe in probes.items()
                for k, v in distances(head.dit, conditions[probe], targets[probe], history[probe],
                                      generator.manual_seed(seed)).items()}

    curve = [{"step": 0, "flow_loss": None, **evaluate()}]
    losses, started = [], time.perf_counter()
    for step in range(1, steps + 1):
        pick = trainable[torch.randint(0, trainable.numel(), (batch,))]
        loss = head.dit.flow_matching_errors(targets[pick], conditions[pick], history[pick], cfg.flow.time_mu,
                                             cfg.flow.time_sigma, cfg.flow.cfg_dropout).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), run.train.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            recent = losses[-eval_every:]
            curve.append({"step": step, "flow_loss": sum(recent) / len(recent), **evaluate()})
            print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in curve[-1].items() if k != "step"),
                  flush=True)
    return {"latents": str(latents), "config": str(config), "overrides": list(overrides), "items": items,
            "conditions_from": str(conditions_from) if conditions_from else "random", "holdout": holdout,
            "fresh_head": fresh_head or conditions_from is None, "patches": int(targets.shape[0]),
            "latent_dim": int(targets.shape[-1]), "patch_size": cfg.patch_size,
            "dit": vars(cfg.dit), "learning_rate": run.train.learning_rate,
            "flow_head_lr_scale": run.train.flow_head_lr_scale, "batch": batch, "steps": steps,
            "seconds": round(time.perf_counter() - started, 1),
            "mean_patch_distance": float(targets[probes[""]].pow(2).mean()), "curve": curve}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latents", required=True, help="a latent store (data_prep.extract_latents)")
    parser.add_argument("--config", required=True, help="a unified training YAML (configs/unified/train_*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted overrides of that config, as for train_unified.py (repeatable)")
    parser.add_argument("--items", type=int, default=24, help="utterances from the start of the store")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=256, help="patches per step")
    parser.add_argument("--eval_every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions_from", help="a trained unified model folder: its own conditions and DiT")
    parser.add_argument("--holdout", type=int, default=0, help="last utterances scored but never trained on")
    parser.add_argument("--fresh_head", action="store_true", help="with --conditions_from: a new DiT, not its own")
    parser.add_argument("--out", default="outputs/flow_head_fit.json")
    args = parser.parse_args(argv)
    result = fit(args.latents, args.config, args.overrides, args.items, args.steps, args.batch, args.eval_every,
                 seed=args.seed, conditions_from=args.conditions_from, holdout=args.holdout,
                 fresh_head=args.fresh_head)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
