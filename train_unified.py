"""Train the unified AR+DiT model (TTS + ASR, one set of weights) on pre-extracted HoliTok latents.

  accelerate launch train_unified.py --config configs/unified/train_tiny.yaml                  # one process
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train_unified.py --config ...  # CPU DDP
  accelerate launch --multi_gpu --num_processes 8 train_unified.py --config configs/unified/train_base.yaml
  ... --set train.deepspeed_config=configs/deepspeed/zero2.json                                # DeepSpeed ZeRO-2
  ... --resume                      # continue from the newest complete checkpoint in train.output_dir
  ... --resume runs/x/checkpoints/step-00001000

Every process draws its own batches (task ratio, frame budget) from the latent stores; checkpoints hold the model,
optimizer, scheduler, every rank's sampler position and RNG states, so a resumed run repeats exactly the losses an
uninterrupted one would have had. Bad items are skipped and reported at the end (and in bad_items.json); a
non-finite loss skips its step, and `train.max_consecutive_nonfinite` of them in a row stop the run with a
checkpoint and exit code 3.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DeepSpeedPlugin, DistributedType, gather_object, set_seed
from safetensors.torch import load_model
from tqdm import tqdm

from holitok.train.run_info import (deepspeed_requested, describe_accelerator, format_run_info,
                                    refuse_inactive_deepspeed)
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.train.bad_items import BadItemLog
from holitok_slm.train.checkpoint import (PARTIAL, checkpoint_dir, latest_checkpoint, load_optimizer_state,
                                          prune_checkpoints, read_rank_state, set_rng_state, write_rank_state)
from holitok_slm.train.config import TrainingRun, load_training_run
from holitok_slm.train.data import open_streams
from holitok_slm.train.distributed import accelerator_kwargs_handlers
from holitok_slm.train.model_setup import (apply_semantic_freeze, ensure_sentencepiece, init_submodules_from,
                                           statistics_items)
from holitok_slm.train.optim import build_optimizer, build_scheduler
from holitok_slm.train.sampler import FrameBudgetBatcher, TaskSampler

EXIT_NONFINITE = 3
STATISTICS_ITEMS_PER_STREAM = 64


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML with model:, data: and train: sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from the newest checkpoint of train.output_dir, or from the given one")
    return parser.parse_args(argv)


def build_accelerator(run: TrainingRun) -> Accelerator:
    cfg = run.train
    plugin = None
    if cfg.deepspeed_config:
        plugin = DeepSpeedPlugin(hf_ds_config=json.loads(Path(cfg.deepspeed_config).read_text()))
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with="tensorboard", project_dir=cfg.output_dir, deepspeed_plugin=plugin,
        cpu=not torch.cuda.is_available() and plugin is None and os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true",
        kwargs_handlers=accelerator_kwargs_handlers()
        + [DistributedDataParallelKwargs(find_unused_parameters=cfg.ddp_find_unused_parameters)])
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        # Batches are built by the frame-budget batcher, not a DataLoader, so DeepSpeed gets explicit values.
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = 1
        ds["gradient_accumulation_steps"] = cfg.gradient_accumulation_steps
        ds["gradient_clipping"] = cfg.grad_clip
        ds["train_batch_size"] = cfg.gradient_accumulation_steps * accelerator.num_processes
        ds.setdefault("zero_allow_untested_optimizer", True)
    return accelerator


def is_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def describe_run(accelerator: Accelerator, run: TrainingRun) -> dict:
    """What this run really is, with its frame budget; refuses a DeepSpeed request accelerate did not honour."""
    info = describe_accelerator(accelerator)
    refuse_inactive_deepspeed(info, deepspeed_requested(run.train.deepspeed_config),
                              f"train.deepspeed_config={run.train.deepspeed_config!r}")
    # The padded-frame budget of all ranks (25 frames = 1 s of audio).
    info["frames_per_optimizer_step"] = (run.data.max_frames_per_batch * run.train.gradient_accumulation_steps
                                         * accelerator.num_processes)
    return info


def export_model(accelerator: Accelerator, model, run: TrainingRun, directory: Path) -> None:
    """save_pretrained() weights. DeepSpeed keeps parameters as views into flat buffers (and partitions them under
    ZeRO-3), so there the gathered state dict is loaded into a fresh CPU model that is then saved."""
    if is_deepspeed(accelerator):
        state = accelerator.get_state_dict(model)  # collective under ZeRO-3: every rank must call it
        if accelerator.is_main_process:
            full = UnifiedModel.from_config(run.model)
            full.load_checked_state_dict({k: v.detach().cpu().clone() for k, v in state.items()})
            full.save_pretrained(directory)
    elif accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(directory)


def save_checkpoint(accelerator, model, optimizer, scheduler, batcher, bad_items, run, step, counters,
                    run_info: dict) -> Path:
    final = checkpoint_dir(run.train.output_dir, step)
    tmp = final.with_name(final.name + PARTIAL)
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if is_deepspeed(accelerator):
        model.save_checkpoint(str(tmp / "deepspeed"), tag="engine")
    if run.train.export_model_in_checkpoints or not is_deepspeed(accelerator):
        export_model(accelerator, model, run, tmp / "model")
    if accelerator.is_main_process and not is_deepspeed(accelerator):
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    write_rank_state(tmp, accelerator.process_index,
                     {"batcher": batcher.state_dict(), "bad_items": bad_items.state_dict()})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "scheduler": scheduler.state_dict(), "counters": counters,
                 "world_size": accelerator.num_processes, "run": run_info, "config": run.to_dict()}
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1, default=str))
        os.replace(tmp, final)
        prune_checkpoints(run.train.output_dir, run.train.keep_last_checkpoints)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, accelerator, model, optimizer, scheduler, batcher, bad_items) -> tuple[int, dict]:
    state = json.loads((path / "trainer_state.json").read_text())
    if state["world_size"] != accelerator.num_processes:
        raise SystemExit(f"{path} was written by {state['world_size']} processes; this run has "
                         f"{accelerator.num_processes}. Resume with the same number of processes.")
    if is_deepspeed(accelerator):
        load_path, _ = model.load_checkpoint(str(path / "deepspeed"), tag="engine")
        if load_path is None:
            raise SystemExit(f"DeepSpeed found no engine checkpoint in {path / 'deepspeed'}")
    else:
        # load_model is save_model's counterpart: it restores tied (shared) tensors whichever alias was stored.
        load_model(accelerator.unwrap_model(model), str(path / "model" / "model.safetensors"), strict=True)
        load_optimizer_state(optimizer, path / "optimizer.pt")
    scheduler.load_state_dict(state["scheduler"])
    rank_state, rng_plain, rng_tensors = read_rank_state(path, accelerator.process_index)
    batcher.load_state_dict(rank_state["batcher"])
    bad_items.load_state_dict(rank_state["bad_items"])
    set_rng_state(rng_plain, rng_tensors)
    return int(state["step"]), state["counters"]


def flat_config(run: TrainingRun) -> dict:
    """TensorBoard hparams accept scalars and strings only."""
    out = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            out[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", run.to_dict())
    return out


def collate_or_drop(unwrapped: UnifiedModel, items: list[dict], bad_items: BadItemLog) -> dict | None:
    """Collates a batch; items the model refuses are logged as bad and left out."""
    try:
        return unwrapped.collate(items)
    except ValueError:
        kept = []
        for item in items:
            try:
                unwrapped.collate([item])
                kept.append(item)
            except ValueError as err:
                bad_items.add(item["id"], f"rejected-by-model: {err}")
        return unwrapped.collate(kept) if kept else None


def main(argv=None) -> int:
    args = parse_args(argv)
    run = load_training_run(args.config, args.overrides)
    cfg = run.train
    output_dir = Path(cfg.output_dir)
    accelerator = build_accelerator(run)
    run_info = describe_run(accelerator, run)
    frames = run_info["frames_per_optimizer_step"]
    accelerator.print(format_run_info(run_info, f"at most {frames} latent frames ({frames / 25:.0f} s of audio)"))
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed)  # identical initial weights on every rank; the data streams are per rank

    bad_items = BadItemLog()
    apply_semantic_freeze(run.model, cfg.freeze_semantic_encoder)
    stores, streams = open_streams(run.data, bad_items, run.model.latent_dim)
    ensure_sentencepiece(run.model, stores, output_dir, accelerator.is_main_process, accelerator.wait_for_everyone)
    batcher = FrameBudgetBatcher(TaskSampler(streams, run.data.task_ratio, seed=cfg.seed, rank=rank, world_size=world),
                                 stores, run.data.max_frames_per_batch, run.data.max_items_per_batch, bad_items,
                                 with_semantic=run.data.use_semantic_features)

    model = UnifiedModel.from_config(run.model)
    resume_from = None
    if args.resume:
        resume_from = latest_checkpoint(output_dir) if args.resume == "latest" else Path(args.resume)
        if resume_from is None:
            accelerator.print(f"--resume: no checkpoint in {output_dir}/checkpoints yet; starting from scratch")
    if resume_from is None:
        stats = model.fit_data_statistics(statistics_items(stores, streams, STATISTICS_ITEMS_PER_STREAM, bad_items))
        accelerator.print(f"latent statistics: {stats}")
        if cfg.init_dit_from:
            copied = init_submodules_from(model, cfg.init_dit_from, cfg.init_dit_prefixes)
            accelerator.print(f"initialised {len(copied)} tensors under {cfg.init_dit_prefixes} from {cfg.init_dit_from}")
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)  # stepped by hand once per optimizer step (not prepared: see docs)
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    step, counters = 0, {"nonfinite_steps": 0, "consecutive_nonfinite": 0}
    if resume_from is not None:
        step, counters = load_checkpoint(resume_from, accelerator, model, optimizer, scheduler, batcher, bad_items)
        accelerator.print(f"resumed from {resume_from} at step {step}")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.json").write_text(json.dumps(run.to_dict(), indent=1, default=str))
    accelerator.init_trackers("tensorboard", config={**flat_config(run), **{f"run.{k}": v if v is not None else "none"
                                                                           for k, v in run_info.items()}})
    metrics_file = open(output_dir / "metrics.jsonl", "a") if accelerator.is_main_process else None
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train", disable=not accelerator.is_main_process,
               dynamic_ncols=True)
    model.train()
    exit_code = 0
    started = time.time()
    first_step = step + 1
    while step < cfg.max_steps:
        step += 1
        sums = {"loss": 0.0, "flow_loss": 0.0, "stop_loss": 0.0, "text_loss": 0.0}
        if run.model.flow.asr_ctc_weight > 0:
            sums["ctc_loss"] = 0.0
        finite_micro, items_seen, frames_seen, tts_items = 0, 0, 0, 0
        step_poisoned = False
        for micro in range(cfg.gradient_accumulation_steps):
            batch = None
            while batch is None:
                items = batcher.next_batch()
                batch = collate_or_drop(unwrapped, items, bad_items)
            items_seen += len(items)
            frames_seen += sum(int(item["latents"].shape[0]) for item in items)
            tts_items += sum(item["task"] == "tts" for item in items)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    out = model(**batch)
                loss = out["loss"]
                if step in cfg.inject_nonfinite_at_steps and micro == 0:
                    loss = loss * float("nan")
                # Every rank must take the same branch or DDP/ZeRO collectives would hang.
                nonfinite = accelerator.reduce(torch.tensor([0.0 if torch.isfinite(loss) else 1.0],
                                                            device=accelerator.device), "sum").item() > 0
                if nonfinite:
                    step_poisoned = True
                    # Zero gradients through every trainable parameter keep the collectives in step.
                    loss = sum((p.sum() for p in model.parameters() if p.requires_grad), loss.new_zeros(())) * 0.0
                else:
                    finite_micro += 1
                    for key in sums:
                        sums[key] += float(out[key].detach())
                last_micro = micro == cfg.gradient_accumulation_steps - 1
                if last_micro and step_poisoned and is_deepspeed(accelerator):
                    # DeepSpeed steps inside backward(); a zero learning rate leaves the weights unchanged.
                    saved_lrs = [group["lr"] for group in optimizer.param_groups]
                    for group in optimizer.param_groups:
                        group["lr"] = 0.0
                accelerator.backward(loss)
                if last_micro and step_poisoned and is_deepspeed(accelerator):
                    for group, lr in zip(optimizer.param_groups, saved_lrs):
                        group["lr"] = lr
                grad_norm = None
                if accelerator.sync_gradients and not step_poisoned:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if not step_poisoned:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        if step_poisoned:
            counters["nonfinite_steps"] += 1
            counters["consecutive_nonfinite"] += 1
            accelerator.print(f"step {step}: non-finite loss, step skipped "
                              f"({counters['consecutive_nonfinite']} in a row, {counters['nonfinite_steps']} total)")
        else:
            counters["consecutive_nonfinite"] = 0
        # Counts are summed over ranks, losses averaged over ranks (docs/training.md, "Metrics").
        counts = accelerator.reduce(torch.tensor([items_seen, frames_seen, tts_items], device=accelerator.device),
                                    "sum").tolist()
        record = {"step": step, "lr": lr, "world_size": world, "items": int(counts[0]), "frames": int(counts[1]),
                  "tts_items": int(counts[2]), "skipped_nonfinite": step_poisoned}
        if step == first_step:  # the first line each (re)start writes says what the run really is
            record["run"] = run_info
        if finite_micro:
            local = torch.tensor([sums[k] / finite_micro for k in sums], device=accelerator.device)
            values = accelerator.reduce(local, "mean").tolist()
            record.update(dict(zip(sums, values)))
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        if accelerator.is_main_process:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))
                                 and not isinstance(v, bool)}, step=step)
            bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        if counters["consecutive_nonfinite"] >= cfg.max_consecutive_nonfinite:
            path = save_checkpoint(accelerator, model, optimizer, scheduler, batcher, bad_items, run, step, counters,
                                   run_info)
            accelerator.print(
                f"STOPPING: {counters['consecutive_nonfinite']} consecutive steps had a non-finite loss "
                f"(steps {step - counters['consecutive_nonfinite'] + 1}..{step}). The weights are those of the last "
                f"good step; checkpoint: {path}. Lower train.learning_rate, check the data, or resume with --resume.")
            exit_code = EXIT_NONFINITE
            break
        if step % cfg.save_every == 0 or step == cfg.max_steps:
            save_checkpoint(accelerator, model, optimizer, scheduler, batcher, bad_items, run, step, counters,
                                   run_info)
    bar.close()

    all_bad = gather_object([bad_items.state_dict()])
    if accelerator.is_main_process:
        merged = BadItemLog()
        for part in all_bad:
            merged.merge(part)
        (output_dir / "bad_items.json").write_text(json.dumps(merged.state_dict(), indent=1, ensure_ascii=False))
        accelerator.print(f"finished at step {step} in {time.time() - started:.1f} s; "
                          f"{counters['nonfinite_steps']} non-finite steps skipped")
        accelerator.print(merged.report())
        metrics_file.close()
    if exit_code == 0:
        export_model(accelerator, model, run, output_dir / "final")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    sys.stdout.flush()
    sys.stderr.flush()
    return exit_code


if __name__ == "__main__":
    code = main()
    # gloo can abort in its destructor at interpreter exit (seen on CPU runs); everything is flushed by now.
    os._exit(code)
