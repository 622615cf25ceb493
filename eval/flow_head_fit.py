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
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from holitok_slm.infer.euler_sampler import sample_patch
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


def fit(latents: str | Path, config: str | Path, overrides: list[str], items: int, steps: int, batch: int,
        eval_every: int, eval_patches: int = 256, seed: int = 0) -> dict:
    run = load_training_run(config, list(overrides) + [f"train.max_steps={steps}"])
    cfg = run.model
    torch.manual_seed(seed)
    targets, history = patch_dataset(LatentStore(latents), items, cfg.patch_size)
    conditions = torch.randn(targets.shape[0], cfg.dit.hidden_size)
    head = _HeadOnly(DiTHead(cfg.dit, targets.shape[-1], cfg.patch_size))
    optimizer = build_optimizer(head, run.train)
    scheduler = build_scheduler(optimizer, run.train)
    probe = torch.arange(0, targets.shape[0], max(1, targets.shape[0] // eval_patches))
    generator = torch.Generator().manual_seed(seed)
    curve = [{"step": 0, "flow_loss": None, **distances(head.dit, conditions[probe], targets[probe], history[probe],
                                                         generator.manual_seed(seed))}]
    losses, started = [], time.perf_counter()
    for step in range(1, steps + 1):
        pick = torch.randint(0, targets.shape[0], (batch,))
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
            curve.append({"step": step, "flow_loss": sum(recent) / len(recent),
                          **distances(head.dit, conditions[probe], targets[probe], history[probe],
                                      generator.manual_seed(seed))})
            print(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in curve[-1].items() if k != "step"),
                  flush=True)
    return {"latents": str(latents), "config": str(config), "overrides": list(overrides), "items": items,
            "patches": int(targets.shape[0]), "latent_dim": int(targets.shape[-1]), "patch_size": cfg.patch_size,
            "dit": vars(cfg.dit), "learning_rate": run.train.learning_rate,
            "flow_head_lr_scale": run.train.flow_head_lr_scale, "batch": batch, "steps": steps,
            "seconds": round(time.perf_counter() - started, 1),
            "mean_patch_distance": float(targets[probe].pow(2).mean()), "curve": curve}


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
    parser.add_argument("--out", default="outputs/flow_head_fit.json")
    args = parser.parse_args(argv)
    result = fit(args.latents, args.config, args.overrides, args.items, args.steps, args.batch, args.eval_every,
                 seed=args.seed)
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
