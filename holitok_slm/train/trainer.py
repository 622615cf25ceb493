"""The unified model's training loop (accelerate: DDP, DeepSpeed, CPU), in the tokenizer trainer's shape.

UnifiedTrainer(run, resume).run() builds everything from a TrainingRun, trains to train.max_steps and exports
`final/`. Like holitok/train/trainer.py's StageTrainer it has one `train_step()`, `save_checkpoint()` into the
shared folder layout, and the shared non-finite policy (both in holitok/train/run_state.py). train_unified.py is the
thin entry point users launch.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import DeepSpeedPlugin, DistributedType, gather_object, set_seed
from safetensors.torch import load_model
from tqdm import tqdm

from holitok.train.run_info import (deepspeed_requested, describe_accelerator, format_run_info,
                                    refuse_inactive_deepspeed)
from holitok.train.run_state import (EXIT_NONFINITE, NonFiniteGuard, checkpoint_paths, latest_checkpoint,
                                     publish_checkpoint, read_trainer_state, start_checkpoint)
from holitok_slm.config import record_derived
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.train.augment import drop_tts_text, mask_asr_spans
from holitok_slm.train.bad_items import BadItemLog
from holitok_slm.train.checkpoint import load_optimizer_state, read_rank_state, set_rng_state, write_rank_state
from holitok_slm.train.config import EXPORT_DTYPES, TrainingRun
from holitok_slm.train.data import make_batcher, open_streams
from holitok_slm.train.distributed import accelerator_kwargs_handlers
from holitok_slm.train.model_setup import (apply_semantic_freeze, check_semantic_source, check_text_points,
                                           ensure_sentencepiece, freeze_all_but, init_submodules_from,
                                           note_trained_characters, statistics_items, store_aligner)
from holitok_slm.train.optim import build_optimizer, build_scheduler

STATISTICS_ITEMS_PER_STREAM = 64


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


class UnifiedTrainer:
    """Builds everything for one run from its config; ``run()`` trains to ``train.max_steps`` and exports."""

    def __init__(self, run: TrainingRun, resume: str | None = None):
        """``resume``: None (start fresh), "latest" (the newest complete checkpoint, if any) or a checkpoint path."""
        self.run_config = run
        cfg = run.train
        self.output_dir = Path(cfg.output_dir)
        self.accelerator = accelerator = build_accelerator(run)
        self.run_info = describe_run(accelerator, run)
        frames = self.run_info["frames_per_optimizer_step"]
        accelerator.print(format_run_info(self.run_info, f"at most {frames} latent frames ({frames / 25:.0f} s of audio)"))
        rank, world = accelerator.process_index, accelerator.num_processes
        set_seed(cfg.seed)  # identical initial weights on every rank; the data streams are per rank

        self.bad_items = BadItemLog()
        written = run.model.to_dict()
        apply_semantic_freeze(run.model, cfg.freeze_semantic_encoder)
        check_semantic_source(run.model, run.data.use_semantic_features)
        stores, streams = open_streams(run.data, self.bad_items, run.model.latent_dim, rank, world)
        ensure_sentencepiece(run.model, stores, self.output_dir, accelerator.is_main_process,
                             accelerator.wait_for_everyone)
        record_derived(run.model, written, "holitok_slm/train/model_setup.py")
        forced_pointer = run.model.text_pointer and run.model.text_pointer_alignment == "forced"
        self.batcher = make_batcher(run.data, stores, streams, cfg.seed, rank, world, self.bad_items,
                                    with_points=forced_pointer)

        model = UnifiedModel.from_config(run.model)
        note_trained_characters(model, stores, cfg.init_dit_from, accelerator.print)
        # Only TTS items read a forced alignment: an ASR-only store (e.g. a speed-perturbed copy) needs none.
        tts_stores = [store for store, spec in zip(stores, run.data.datasets) if "tts" in spec.tasks]
        check_text_points(run.model, tts_stores, model.text_tokenizer)
        self.aligner = store_aligner(run.model, tts_stores)
        model.attach_aligner(self.aligner)
        self.resume_from = None
        if resume:
            self.resume_from = latest_checkpoint(self.output_dir) if resume == "latest" else Path(resume)
            if self.resume_from is None:
                accelerator.print(f"--resume: no checkpoint in {self.output_dir}/checkpoints yet; starting from scratch")
        if self.resume_from is None:
            # Every rank must fit the same statistics: with shard_per_rank they come from rank 0's shards everywhere.
            stat_stores, stat_streams = ((stores, streams) if not run.data.shard_per_rank or rank == 0
                                         else open_streams(run.data, BadItemLog(), run.model.latent_dim, 0, world))
            stats = model.fit_data_statistics(statistics_items(stat_stores, stat_streams, STATISTICS_ITEMS_PER_STREAM,
                                                               self.bad_items))
            accelerator.print(f"latent statistics: {stats}")
            if cfg.init_dit_from:
                copied = init_submodules_from(model, cfg.init_dit_from, cfg.init_dit_prefixes)
                accelerator.print(f"initialised {len(copied)} tensors under {cfg.init_dit_prefixes} "
                                  f"from {cfg.init_dit_from}")
        if cfg.trainable_prefixes is not None:
            trained = freeze_all_but(model, cfg.trainable_prefixes)
            accelerator.print(f"train.trainable_prefixes {cfg.trainable_prefixes}: {trained} parameter tensors "
                              f"train, the rest is frozen")
        optimizer = build_optimizer(model, cfg)
        self.scheduler = build_scheduler(optimizer, cfg)  # stepped by hand once per optimizer step (docs/training.md)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.unwrapped = accelerator.unwrap_model(self.model)
        self.step = 0
        self.nonfinite = NonFiniteGuard(cfg.max_consecutive_nonfinite)
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
            accelerator.print(f"resumed from {self.resume_from} at step {self.step}")

    # ---- one optimisation step --------------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimizer step over train.gradient_accumulation_steps micro-batches; returns its metrics record."""
        accelerator, model, optimizer, cfg = self.accelerator, self.model, self.optimizer, self.run_config.train
        self.step += 1
        step = self.step
        sums = {"loss": 0.0, "flow_loss": 0.0, "stop_loss": 0.0, "text_loss": 0.0}
        if self.run_config.model.flow.asr_ctc_weight > 0:
            sums["ctc_loss"] = 0.0
        if self.run_config.model.flow.tts_ctc_weight > 0:
            sums["tts_ctc_loss"] = 0.0
        if self.run_config.model.flow.patch_regression_weight > 0:
            sums["patch_regression_loss"] = 0.0
        if self.unwrapped.forced_pointer:
            sums["pace_loss"] = 0.0
        finite_micro, items_seen, frames_seen, tts_items = 0, 0, 0, 0
        step_poisoned = False
        grad_norm = None
        for micro in range(cfg.gradient_accumulation_steps):
            batch = None
            while batch is None:
                items = mask_asr_spans(self.batcher.next_batch(), self.run_config.data.asr_time_mask_ratio,
                                       self.run_config.data.asr_time_mask_span)
                items = drop_tts_text(items, self.run_config.model.flow.text_dropout)
                batch = collate_or_drop(self.unwrapped, items, self.bad_items)
            items_seen += len(items)
            frames_seen += sum(int(part["latents"].shape[0]) for item in items  # a prompt item's frames too
                               for part in (item, item.get("prompt")) if part is not None)
            tts_items += sum(item["task"] == "tts" for item in items)
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    out = model(**batch)
                loss = out["loss"]
                if step in cfg.inject_nonfinite_at_steps and micro == 0:  # fault injection (tests)
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
                if accelerator.sync_gradients and not step_poisoned:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if not step_poisoned:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        # Counts are summed over ranks, losses averaged over ranks (docs/training.md, "Metrics").
        counts = accelerator.reduce(torch.tensor([items_seen, frames_seen, tts_items], device=accelerator.device),
                                    "sum").tolist()
        record = {"step": step, "lr": lr, "world_size": accelerator.num_processes, "items": int(counts[0]),
                  "frames": int(counts[1]), "tts_items": int(counts[2]), "skipped_nonfinite": step_poisoned}
        if finite_micro:
            local = torch.tensor([sums[k] / finite_micro for k in sums], device=accelerator.device)
            record.update(dict(zip(sums, accelerator.reduce(local, "mean").tolist())))
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        return record

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def export_model(self, directory: Path, dtype: torch.dtype | None = None) -> None:
        """save_pretrained() weights (floating tensors in `dtype` if given). DeepSpeed keeps parameters as views into flat buffers (and partitions them under
        ZeRO-3), so there the gathered state dict is loaded into a fresh CPU model that is then saved."""
        accelerator = self.accelerator
        if is_deepspeed(accelerator):
            state = accelerator.get_state_dict(self.model)  # collective under ZeRO-3: every rank must call it
            if accelerator.is_main_process:
                full = UnifiedModel.from_config(self.run_config.model)
                full.load_checked_state_dict({k: v.detach().cpu().clone() for k, v in state.items()})
                full.attach_aligner(self.aligner)
                full.save_pretrained(directory, dtype)
        elif accelerator.is_main_process:
            self.unwrapped.save_pretrained(directory, dtype)

    def save_checkpoint(self) -> Path:
        accelerator, run = self.accelerator, self.run_config
        partial, final = checkpoint_paths(self.output_dir, self.step)
        if accelerator.is_main_process:
            start_checkpoint(self.output_dir, self.step)
        accelerator.wait_for_everyone()
        if is_deepspeed(accelerator):
            self.model.save_checkpoint(str(partial / "deepspeed"), tag="engine")
        if run.train.export_model_in_checkpoints or not is_deepspeed(accelerator):
            self.export_model(partial / "model")
        if accelerator.is_main_process and not is_deepspeed(accelerator):
            torch.save(self.optimizer.state_dict(), partial / "optimizer.pt")
        write_rank_state(partial, accelerator.process_index,
                         {"batcher": self.batcher.state_dict(), "bad_items": self.bad_items.state_dict()})
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": self.step, "scheduler": self.scheduler.state_dict(), "counters": self.nonfinite.state_dict(),
                     "world_size": accelerator.num_processes, "run": self.run_info, "config": run.to_dict()}
            publish_checkpoint(partial, final, state, run.train.keep_last_checkpoints)
        accelerator.wait_for_everyone()
        return final

    def load_checkpoint(self, path: Path) -> None:
        accelerator = self.accelerator
        state = read_trainer_state(path)
        if state["world_size"] != accelerator.num_processes:
            raise SystemExit(f"{path} was written by {state['world_size']} processes; this run has "
                             f"{accelerator.num_processes}. Resume with the same number of processes.")
        if is_deepspeed(accelerator):
            load_path, _ = self.model.load_checkpoint(str(path / "deepspeed"), tag="engine")
            if load_path is None:
                raise SystemExit(f"DeepSpeed found no engine checkpoint in {path / 'deepspeed'}")
        else:
            # load_model is save_model's counterpart: it restores tied (shared) tensors whichever alias was stored.
            load_model(self.unwrapped, str(path / "model" / "model.safetensors"), strict=True)
            load_optimizer_state(self.optimizer, path / "optimizer.pt")
        self.scheduler.load_state_dict(state["scheduler"])
        rank_state, rng_plain, rng_tensors = read_rank_state(path, accelerator.process_index)
        self.batcher.load_state_dict(rank_state["batcher"])
        self.bad_items.load_state_dict(rank_state["bad_items"])
        set_rng_state(rng_plain, rng_tensors)
        self.step = int(state["step"])
        self.nonfinite.load_state_dict(state["counters"])

    # ---- the loop -------------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Trains to train.max_steps; returns the exit code (0, or EXIT_NONFINITE when non-finite losses stopped it)."""
        accelerator, run, cfg = self.accelerator, self.run_config, self.run_config.train
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.json").write_text(json.dumps(run.to_dict(), indent=1, default=str))
        accelerator.init_trackers("tensorboard", config={**flat_config(run), **{
            f"run.{k}": v if v is not None else "none" for k, v in self.run_info.items()}})
        metrics_file = open(self.output_dir / "metrics.jsonl", "a") if accelerator.is_main_process else None
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", disable=not accelerator.is_main_process,
                   dynamic_ncols=True)
        self.model.train()
        exit_code = 0
        started = time.time()
        first_step = self.step + 1
        while self.step < cfg.max_steps:
            record = self.train_step()
            step = self.step
            if step == first_step:  # the first line each (re)start writes says what the run really is
                record["run"] = self.run_info
            stop = self.nonfinite.record(not record["skipped_nonfinite"])
            if record["skipped_nonfinite"]:
                accelerator.print(self.nonfinite.skipped_message(step))
            if accelerator.is_main_process:
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if step % cfg.log_every == 0 or step == cfg.max_steps:
                    accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))
                                     and not isinstance(v, bool)}, step=step)
                bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", lr=f"{record['lr']:.2e}")
            bar.update(1)
            if stop:
                accelerator.print(self.nonfinite.stop_message(step, self.save_checkpoint()))
                exit_code = EXIT_NONFINITE
                break
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                self.save_checkpoint()
        bar.close()

        all_bad = gather_object([self.bad_items.state_dict()])
        if accelerator.is_main_process:
            merged = BadItemLog()
            for part in all_bad:
                merged.merge(part)
            (self.output_dir / "bad_items.json").write_text(json.dumps(merged.state_dict(), indent=1,
                                                                       ensure_ascii=False))
            accelerator.print(f"finished at step {self.step} in {time.time() - started:.1f} s; "
                              f"{self.nonfinite.total} non-finite steps skipped")
            accelerator.print(merged.report())
            metrics_file.close()
        if exit_code == 0:
            # train.export_dtype applies to final/ only: checkpoints stay float32, training resumes from them
            self.export_model(self.output_dir / "final", EXPORT_DTYPES[self.run_config.train.export_dtype])
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return exit_code
