"""Tiny CPU runs: Stage I learns (mel loss halves), Stage II keeps that fidelity while its KL falls."""

from pathlib import Path

import pytest
import soundfile as sf
import torch

from holitok.train.config import load_config
from holitok.train.flow import flow_kl
from holitok.train.toy_assets import write_clips

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


@pytest.fixture
def fresh_accelerate():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def clips_batch(manifest):
    clips = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in sorted(manifest.parent.glob("clip*.wav"))]
    return torch.stack(clips)[:, None]


@torch.no_grad()
def evaluate(trainer, audio, sample):
    """Multi-scale mel L1 of the reconstruction (posterior mean, or a fixed-seed sample) and the KL."""
    holitok = trainer.unwrapped.holitok.eval()
    mu, log_std = holitok.forward_posterior(audio).chunk(2, dim=1)
    generator = torch.Generator().manual_seed(0)
    z = mu + torch.randn(mu.shape, generator=generator) * log_std.exp() if sample else mu
    mel = trainer.mel_loss(holitok.forward_decode(z), audio).item()
    flow = trainer.unwrapped.flow
    kl = flow_kl(z, log_std, torch.ones_like(mu[:, :1]), flow.eval()).item() if flow is not None else None
    holitok.train()
    return mel, kl


@pytest.mark.slow
def test_stage1_halves_the_mel_loss_and_stage2_keeps_it_while_kl_falls(tmp_path, fresh_accelerate):
    from accelerate.state import AcceleratorState

    from holitok.train.trainer import StageTrainer

    manifest = write_clips(tmp_path / "clips", count=2, seconds=0.8)
    audio = clips_batch(manifest)
    common = [f"data.train={manifest}", "train.progress_bar=false", "train.save_every=1000",
              "train.sample_every=1000"]

    stage1 = StageTrainer(load_config(CONFIGS / "tiny_stage1.yaml", common + [
        f"output_dir={tmp_path / 's1'}", "train.max_steps=16"]))
    mel_start, _ = evaluate(stage1, audio, sample=False)
    result = stage1.run()
    mel_stage1, _ = evaluate(stage1, audio, sample=False)
    assert mel_stage1 <= 0.5 * mel_start, (mel_start, mel_stage1)

    AcceleratorState._reset_state(reset_partial_state=True)
    stage2 = StageTrainer(load_config(CONFIGS / "tiny_stage2.yaml", common + [
        f"output_dir={tmp_path / 's2'}", f"init_from={result.final_dir}", "train.max_steps=8"]))
    _, kl_start = evaluate(stage2, audio, sample=True)
    stage2.run()
    mel_mean, _ = evaluate(stage2, audio, sample=False)
    mel_sample, kl_end = evaluate(stage2, audio, sample=True)
    assert mel_sample <= 1.1 * mel_stage1 and mel_mean <= 1.1 * mel_stage1, (mel_stage1, mel_mean, mel_sample)
    assert kl_end < kl_start, (kl_start, kl_end)
