"""The GAN training loop shared by all three stages (accelerate: multi-GPU/multi-node/CPU, resumable, TensorBoard)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from ..audio import load_audio
from .checkpointing import check_resume_init, init_fingerprint, initialise_from, recorded_init, save_stage_state
from .config import TokenizerTrainConfig, save_config
from .data import AudioDataset, Collator, read_items
from .discriminators import Discriminators
from .export import export_trained
from .losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from .mel import MultiScaleMelLoss
from .phase_loss import PhaseDerivativeLoss
from .spectrum_loss import LinearSpectrumLoss
from .run_state import (EXIT_NONFINITE, NonFiniteGuard, checkpoint_paths, latest_checkpoint, publish_checkpoint,
                        read_trainer_state, start_checkpoint)
from .run_info import deepspeed_requested, describe_accelerator, format_run_info, refuse_inactive_deepspeed
from .tb_logging import SpectrogramPainter, log_media
from .teachers import Teachers
from .train_model import TokenizerTrainModel

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    final_dir: Path
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # per-step losses (this process)
    exit_code: int = 0  # EXIT_NONFINITE when too many non-finite steps in a row stopped the stage


def lr_factor(step: int, optim) -> float:
    """Linear warm-up, then per-step exponential decay with a floor (Table 7)."""
    warmup = min(1.0, (step + 1) / max(1, optim.warmup_steps))
    return warmup * max(optim.lr_decay ** step, optim.lr_floor / optim.lr)


class StageTrainer:
    """Builds everything for one stage from its config; ``run()`` trains to ``train.max_steps`` and exports."""

    def __init__(self, config: TokenizerTrainConfig):
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.utils import ProjectConfiguration, set_seed

        self.config = config
        output = Path(config.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=config.train.mixed_precision,
            log_with="tensorboard",
            project_config=ProjectConfiguration(project_dir=str(output), logging_dir=str(output / "logs")),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=config.train.find_unused_parameters)],
        )
        self.run_info = describe_accelerator(self.accelerator)
        refuse_inactive_deepspeed(self.run_info, deepspeed_requested(), "ACCELERATE_USE_DEEPSPEED=true")
        if self.run_info["deepspeed"]:
            raise SystemExit("the tokenizer trainer does not run under DeepSpeed (its GAN steps two optimizers); "
                             "launch it without --use_deepspeed")
        # Same seed everywhere for identical initial weights; data randomness differs per rank via the sampler.
        set_seed(config.train.seed)
        accelerator = self.accelerator

        self.teachers = None
        teacher_dims = None
        if config.distills:
            model_rate = config.model.build().sample_rate
            self.teachers = Teachers(config.distill, model_rate).to(accelerator.device)
            teacher_dims = (self.teachers.frame_dim, self.teachers.xvector_dim)
        model = TokenizerTrainModel(config, teacher_dims)
        self.sample_rate, self.hop_size = model.holitok.sample_rate, model.holitok.hop_size
        discriminators = Discriminators(self.sample_rate, config.discriminator)

        self.resume_from = latest_checkpoint(config.output_dir) if config.train.resume else None
        self.init_record = None
        if self.resume_from is not None and config.init_from:
            check_resume_init(self.resume_from, config.init_from)
            self.init_record = recorded_init(self.resume_from)
        if self.resume_from is None and config.init_from:
            self.init_record = init_fingerprint(config.init_from)
            for note in initialise_from(config.init_from, model, discriminators):
                if accelerator.is_main_process:
                    logger.info("init: %s", note)
            if config.stage == 2 and config.stage_options.init_log_std is not None:
                model.reset_log_std_head(config.stage_options.init_log_std)
        elif self.resume_from is None and config.stage > 1:
            logger.warning("stage %d starts from random weights (no init_from); the recipe expects the previous "
                           "stage's output", config.stage)

        optim = config.optim
        self.generator_params = [p for p in model.parameters() if p.requires_grad]
        make_adamw = lambda params: torch.optim.AdamW(params, lr=optim.lr, betas=tuple(optim.betas), eps=optim.eps,
                                                      weight_decay=optim.weight_decay)
        opt_g, opt_d = make_adamw(self.generator_params), make_adamw(discriminators.parameters())
        # Schedulers stay unprepared: accelerate would step them once per process per call.
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda s: lr_factor(s, optim))
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, lambda s: lr_factor(s, optim))
        accelerator.register_for_checkpointing(self.sched_g, self.sched_d)

        data = config.data
        segment = None
        if data.segment_seconds is not None:
            segment = max(1, round(data.segment_seconds * self.sample_rate / self.hop_size)) * self.hop_size
        dataset = AudioDataset(data.train, self.sample_rate, segment, int(data.max_seconds * self.sample_rate))
        world_batch = data.batch_size * accelerator.num_processes
        loader = DataLoader(dataset, batch_size=data.batch_size, shuffle=True, num_workers=data.num_workers,
                            collate_fn=Collator(self.hop_size), drop_last=len(dataset) >= world_batch,
                            persistent_workers=data.num_workers > 0)
        (self.model, self.discriminators, self.opt_g, self.opt_d, self.loader) = accelerator.prepare(
            model, discriminators, opt_g, opt_d, loader)
        self.mel_loss = MultiScaleMelLoss(self.sample_rate, config.mel_loss).to(accelerator.device)
        self.weights = dict(config.loss_weights)
        self.phase_loss = (PhaseDerivativeLoss(config.phase_loss).to(accelerator.device)
                           if self.weights.get("phase") else None)
        self.spectrum_loss = (LinearSpectrumLoss(self.sample_rate, config.spectrum_loss).to(accelerator.device)
                              if self.weights.get("spectrum") else None)
        self.step = 0
        self.saved_step = None
        self.nonfinite = NonFiniteGuard(config.train.max_consecutive_nonfinite)
        if self.resume_from is not None:
            accelerator.load_state(str(self.resume_from))
            state = read_trainer_state(self.resume_from)
            self.step = self.saved_step = int(state["step"])
            self.nonfinite.load_state_dict(state.get("counters", {}))
            if accelerator.is_main_process:
                logger.info("resumed from %s at step %d", self.resume_from, self.step)

    # ---- one optimisation step --------------------------------------------------------------------------------
    @property
    def unwrapped(self) -> TokenizerTrainModel:
        return self.accelerator.unwrap_model(self.model)

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Discriminator update, then generator update; returns every loss term (floats) of this step."""
        accelerator, grad_clip = self.accelerator, self.config.optim.grad_clip
        audio, lengths = batch["audio"], batch["lengths"]
        targets = self.teachers(audio, lengths) if self.teachers is not None else None
        supervision_targets = (self.unwrapped.supervision.choose_targets(batch["labels"])
                               if self.config.stage == 3 else None)
        use_gan = self.step >= self.config.train.adversarial_start_step
        self.model.train()
        self.discriminators.train()
        output = self.model(audio, lengths, targets, supervision_targets)
        fake = output.audio
        audio = output.target if output.target is not None else audio  # a decode crop's own stretch of the input
        logs = {}
        finite = True
        if use_gan:
            d_loss = discriminator_loss(self.discriminators(audio, fake.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            finite = self._finite_everywhere(d_loss)
            if finite:
                accelerator.clip_grad_norm_(self.discriminators.parameters(), grad_clip)
                self.opt_d.step()
            self.opt_d.zero_grad(set_to_none=True)
            self.sched_d.step()
            logs["discriminator"] = d_loss.detach()
        terms = {"mel": self.mel_loss(fake, audio)}
        if self.phase_loss is not None:
            terms["phase"] = self.phase_loss(fake, audio)
        if self.spectrum_loss is not None:
            terms["spectrum"] = self.spectrum_loss(fake, audio)
        if use_gan:
            scores = self.discriminators(audio, fake)
            terms["adv"] = generator_adversarial_loss(scores)
            terms["fm"] = feature_matching_loss(scores)
        terms.update(output.losses)
        total = sum(self.weights[name] * value for name, value in terms.items())
        if self.step + 1 in self.config.train.inject_nonfinite_at_steps:  # fault injection (tests)
            total = total * float("nan")
        self.opt_g.zero_grad(set_to_none=True)
        accelerator.backward(total)
        # Every rank takes the same branch: a non-finite loss anywhere skips the update everywhere.
        finite = self._finite_everywhere(total) and finite
        if finite:
            grad_norm = accelerator.clip_grad_norm_(self.generator_params, grad_clip)
            self.opt_g.step()
            logs["grad_norm_generator"] = torch.as_tensor(grad_norm).detach()
        self.opt_g.zero_grad(set_to_none=True)
        self.sched_g.step()
        self.step += 1
        logs.update({name: value.detach() for name, value in terms.items()})
        logs["generator_total"] = total.detach()
        logs["skipped_nonfinite"] = torch.tensor(0.0 if finite else 1.0)
        return {name: float(value) for name, value in logs.items()}

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        flag = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0], device=self.accelerator.device)
        return self.accelerator.reduce(flag, reduction="sum").item() == 0

    # ---- bookkeeping --------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """accelerate's save_state into step-N.partial, then trainer_state.json and the rename (run_state.py)."""
        accelerator = self.accelerator
        partial, final = checkpoint_paths(self.config.output_dir, self.step)
        if accelerator.is_main_process:
            start_checkpoint(self.config.output_dir, self.step)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(partial))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": self.step, "counters": self.nonfinite.state_dict(),
                     **({"init_from": self.init_record} if self.init_record else {}), "run": self.run_info}
            publish_checkpoint(partial, final, state, self.config.train.keep_checkpoints)
        accelerator.wait_for_everyone()
        self.saved_step = self.step
        return final

    def _batches(self) -> Iterator[dict[str, Any]]:
        epoch = 0
        while True:
            if hasattr(self.loader, "set_epoch"):
                self.loader.set_epoch(epoch + self.step)  # a resumed run does not replay the same order
            yield from self.loader
            epoch += 1

    def _sample_clips(self) -> list[torch.Tensor]:
        data = self.config.data
        items = read_items(data.valid or data.train)[: data.num_samples]
        limit = int(data.sample_seconds * self.sample_rate)
        return [load_audio(item.path, target_sample_rate=self.sample_rate)[:limit] for item in items]

    @torch.no_grad()
    def reconstruct(self, audio: torch.Tensor) -> torch.Tensor:
        """The deterministic reconstruction (posterior mean) of [B, 1, L] audio, as the runtime's encode/decode does."""
        holitok = self.unwrapped.holitok
        was_training = holitok.training
        holitok.eval()
        mu = holitok.forward_posterior(audio.to(self.accelerator.device)).chunk(2, dim=1)[0]
        wav = holitok.forward_decode(mu)
        holitok.train(was_training)
        return wav

    def _log_media(self, clips: list[torch.Tensor], painter: SpectrogramPainter) -> None:
        writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
        fakes = [self.reconstruct(clip[None, None]) for clip in clips]
        log_media(writer, self.step, self.sample_rate, clips, fakes, painter)

    def _reduce_for_logging(self, logs: dict[str, float]) -> dict[str, float]:
        names = sorted(logs)
        values = torch.tensor([logs[n] for n in names], device=self.accelerator.device)
        values = self.accelerator.reduce(values, reduction="mean")
        return dict(zip(names, values.tolist()))

    def run(self) -> TrainResult:
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        loop = config.train
        if accelerator.is_main_process:
            save_config(config, Path(config.output_dir) / "config.yaml")
            logger.info("stage %d: steps %d -> %d on %d processes (%s)", config.stage, self.step, loop.max_steps,
                        accelerator.num_processes, accelerator.device)
            segment = config.data.segment_seconds
            batch = config.data.batch_size * accelerator.num_processes
            logger.info("%s", format_run_info(self.run_info, f"{batch} clips" + (f" of {segment} s" if segment else "")))
        # Logged losses are means over ranks.
        accelerator.init_trackers("tensorboard", config={"stage": config.stage, "max_steps": loop.max_steps,
                                                         **{f"run.{k}": v if v is not None else "none"
                                                            for k, v in self.run_info.items()}})
        clips = self._sample_clips() if accelerator.is_main_process else []
        painter = SpectrogramPainter(self.sample_rate)
        history = []
        progress = tqdm(total=loop.max_steps, initial=self.step, desc=f"stage {config.stage}",
                        disable=not (accelerator.is_main_process and loop.progress_bar), dynamic_ncols=True)
        batches = self._batches()
        while self.step < loop.max_steps:
            logs = self.train_step(next(batches))
            stop = self.nonfinite.record(not logs["skipped_nonfinite"])
            if logs["skipped_nonfinite"] and accelerator.is_main_process:
                logger.warning("%s", self.nonfinite.skipped_message(self.step))
            if stop:
                path = self.save_checkpoint()
                if accelerator.is_main_process:
                    logger.error("%s", self.nonfinite.stop_message(self.step, path))
                progress.close()
                return TrainResult(config.final_dir, self.step, history, exit_code=EXIT_NONFINITE)
            history.append(logs)
            progress.update(1)
            if self.step % loop.log_every == 0 or self.step == loop.max_steps:
                reduced = self._reduce_for_logging(logs)
                reduced["lr"] = self.sched_g.get_last_lr()[0]
                accelerator.log({f"train/{k}": v for k, v in reduced.items()}, step=self.step)
                shown = ("mel", "spectrum", "phase", "pitch", "kl", "ce", "adv")
                progress.set_postfix({k: f"{reduced[k]:.3g}" for k in shown if k in reduced})
            if accelerator.is_main_process and (self.step % loop.sample_every == 0 or self.step == loop.max_steps):
                self._log_media(clips, painter)
            if self.step % loop.save_every == 0 and self.step < loop.max_steps:
                self.save_checkpoint()
        progress.close()
        if self.saved_step != self.step:
            self.save_checkpoint()
        final = config.final_dir
        if accelerator.is_main_process:
            model = self.unwrapped
            save_stage_state(model, accelerator.unwrap_model(self.discriminators), config, final)
            export_trained(model, final, model_name=f"HoliTok-stage{config.stage}")
        accelerator.wait_for_everyone()
        # Close this stage's TensorBoard writer but keep the process group: a chained next stage still needs it.
        for tracker in accelerator.trackers:
            tracker.finish()
        return TrainResult(final, self.step, history)

