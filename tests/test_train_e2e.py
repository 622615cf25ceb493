"""train_unified.py end to end on CPU: exact resume after a kill, 2-process DDP (gloo) and DeepSpeed ZeRO-2 runs,
non-finite loss handling, and a manifest with planted bad items that still trains to the end."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from data_prep.toy_store import write_toy_store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "unified" / "train_tiny.yaml"


def overrides(store: Path, out: Path, steps: int, save_every: int, extra: list[str] = ()) -> list[str]:
    sets = [f"data.datasets=[{{name: toy, latents: '{store}'}}]", "data.max_frames_per_batch=240",
            "data.max_items_per_batch=6", "data.max_frames_per_item=200", f"train.output_dir='{out}'",
            f"train.max_steps={steps}", f"train.save_every={save_every}", "train.warmup_steps=2",
            "train.keep_last_checkpoints=20", "train.log_every=1", *extra]
    return [arg for s in sets for arg in ("--set", s)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def train(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train_unified.py"), "--config", str(CONFIG), *args],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def launch_two(args: list[str], extra_env: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(port), str(ROOT / "train_unified.py"), "--config", str(CONFIG), *args]
    return subprocess.run(cmd, cwd=ROOT, env={**env(), **(extra_env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "store"
    write_toy_store(path, num_items=30, frames=(16, 60), seed=0)
    return path


@pytest.mark.slow
def test_resume_after_kill_repeats_the_uninterrupted_losses(store, tmp_path):
    full = tmp_path / "full"
    done = train(overrides(store, full, steps=6, save_every=2))
    assert done.returncode == 0, done.stderr[-3000:]
    reference = {m["step"]: m for m in metrics(full)}
    assert sorted(reference) == [1, 2, 3, 4, 5, 6] and all(np.isfinite(m["loss"]) for m in reference.values())

    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_unified.py"), "--config", str(CONFIG),
                             *overrides(store, broken, steps=6, save_every=2)], cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = broken / "checkpoints" / "step-00000002"
    deadline = time.time() + 200
    while not (checkpoint / "trainer_state.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # no chance to save or clean up, as after a crash
    proc.wait()
    assert checkpoint.exists()
    seen = len(metrics(broken))
    resumed = train(overrides(store, broken, steps=6, save_every=2) + ["--resume", str(checkpoint)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = metrics(broken)[seen:]
    assert [m["step"] for m in after] == [3, 4, 5, 6]
    assert after[0]["run"]["world_size"] == 1 and "run" not in after[1]  # each (re)start states the run once
    for m in after:  # exact equality: same batches, same noise, same optimizer state
        m.pop("run", None)
        assert m == {k: v for k, v in reference[m["step"]].items() if k != "run"}, (m, reference[m["step"]])
    # --resume without a path takes the newest complete checkpoint and has nothing left to do at max_steps
    latest = train(overrides(store, broken, steps=6, save_every=2) + ["--resume"])
    assert latest.returncode == 0 and "resumed from" in latest.stdout + latest.stderr
    assert "step-00000006" in latest.stdout + latest.stderr


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_and_checkpoints(store, tmp_path):
    out = tmp_path / "ddp"
    done = launch_two(overrides(store, out, steps=3, save_every=3, extra=["train.export_dtype=float16"]),
                      {"ACCELERATE_USE_CPU": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = out / "checkpoints" / "step-00000003"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["step"] == 3
    ranks = [json.loads((checkpoint / f"rank-0000{r}.json").read_text())["sampler"]["batcher"]["sampler"]
             for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["rng"] != ranks[1]["rng"]
    assert (checkpoint / "optimizer.pt").exists() and (out / "final" / "model.safetensors").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2, 3]
    # The run says what it really is, and counts cover both ranks (each rank's batch holds at most 6 items).
    assert "run: 2 process(es), MULTI_CPU (gloo)" in done.stdout + done.stderr
    assert "no DeepSpeed" in done.stdout + done.stderr
    assert state["run"]["world_size"] == 2 and state["run"]["deepspeed"] is False
    assert all(m["world_size"] == 2 for m in metrics(out))
    assert metrics(out)[0]["run"]["backend"] == "gloo" and metrics(out)[0]["run"]["deepspeed"] is False
    assert any(m["items"] > 6 for m in metrics(out))
    # train.export_dtype halves the exported final/ weights only; loading widens them to the checkpoint's, rounded
    from holitok_slm import UnifiedModel

    final, kept = (load_file(str(d / "model.safetensors")) for d in (out / "final", checkpoint / "model"))
    assert {t.dtype for t in final.values() if t.is_floating_point()} == {torch.float16}
    assert {t.dtype for t in kept.values() if t.is_floating_point()} == {torch.float32}
    loaded = UnifiedModel.from_pretrained(out / "final").state_dict()
    assert all(torch.equal(loaded[k], v.half().float()) for k, v in kept.items())


@pytest.mark.slow
def test_deepspeed_request_that_accelerate_would_drop_is_refused(store, tmp_path):
    out = tmp_path / "dropped"
    done = launch_two(overrides(store, out, steps=2, save_every=2,
                                extra=[f"train.deepspeed_config='{ROOT / 'configs/deepspeed/zero2.json'}'"]),
                      {"ACCELERATE_USE_CPU": "1"})
    assert done.returncode != 0
    assert "DeepSpeed was requested" in done.stderr and "launch without ACCELERATE_USE_CPU" in done.stderr
    assert not (out / "checkpoints").exists()


@pytest.mark.slow
def test_two_process_deepspeed_zero2_on_cpu_trains_and_checkpoints(store, tmp_path):
    out = tmp_path / "zero2"
    done = launch_two(overrides(store, out, steps=3, save_every=3,
                                extra=[f"train.deepspeed_config='{ROOT / 'configs/deepspeed/zero2.json'}'"]))
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = out / "checkpoints" / "step-00000003"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["run"]["deepspeed"] and state["run"]["zero_stage"] == 2
    assert "DeepSpeed ZeRO-2" in done.stdout + done.stderr
    engine = checkpoint / "deepspeed" / "engine"
    assert sorted(p.name for p in engine.glob("*optim_states.pt")) == [  # one ZeRO partition per rank
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    weights = load_file(str(checkpoint / "model" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert all(np.isfinite(m["loss"]) for m in metrics(out))


@pytest.mark.slow
def test_nonfinite_loss_skips_the_step_and_a_run_of_them_stops_with_a_checkpoint(store, tmp_path):
    out = tmp_path / "nan"
    done = train(overrides(store, out, steps=3, save_every=1, extra=["train.inject_nonfinite_at_steps=[2]"]))
    assert done.returncode == 0, done.stderr[-3000:]
    steps = {m["step"]: m for m in metrics(out)}
    assert steps[2]["skipped_nonfinite"] and "loss" not in steps[2] and not steps[3]["skipped_nonfinite"]
    assert "step 2: non-finite loss, step skipped" in done.stdout + done.stderr
    before = load_file(str(out / "checkpoints" / "step-00000001" / "model" / "model.safetensors"))
    after = load_file(str(out / "checkpoints" / "step-00000002" / "model" / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # the skipped step changed nothing

    out = tmp_path / "nan_run"
    stopped = train(overrides(store, out, steps=10, save_every=100,
                              extra=["train.inject_nonfinite_at_steps=[3,4,5]", "train.max_consecutive_nonfinite=3"]))
    assert stopped.returncode == 3
    assert "STOPPING: 3 consecutive steps had a non-finite loss (steps 3..5)" in stopped.stdout + stopped.stderr
    assert (out / "checkpoints" / "step-00000005" / "trainer_state.json").exists()
    assert [m["step"] for m in metrics(out)] == [1, 2, 3, 4, 5]


def write_planted_manifest(root: Path) -> tuple[Path, dict[str, str]]:
    """A few real synthetic utterances plus missing, corrupt, silent, over-long and empty-text items."""
    from data_prep.manifest import ManifestRecord, write_manifest
    from data_prep.synth_corpus import CorpusConfig, build_corpus

    corpus = root / "corpus"
    build_corpus(corpus, CorpusConfig(train_voices=["flite_slt", "espeak_us_f3"], heldout_voices=["flite_rms"],
                                      train_utterances_per_voice=3, test_utterances_per_voice=1,
                                      train_sentence_pool=6, test_sentence_pool=2, max_words=7), progress=False)
    records = [json.loads(line) for line in (corpus / "train.jsonl").read_text().splitlines()]
    good = [ManifestRecord(**{**r, "audio": str(corpus / r["audio"])}) for r in records]
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    sf.write(root / "silent.wav", np.zeros(48000, dtype=np.float32), 48000)
    sf.write(root / "long.wav", np.random.default_rng(0).uniform(-0.3, 0.3, 48000 * 6).astype(np.float32), 48000)
    planted = {"planted-missing": "missing", "planted-corrupt": "corrupt", "planted-silent": "silent",
               "planted-long": "over-long", "planted-empty-text": "empty-text"}
    bad = [ManifestRecord("planted-missing", str(root / "nope.wav"), 1.0, "a missing file", "en"),
           ManifestRecord("planted-corrupt", str(root / "corrupt.wav"), 1.0, "a corrupt file", "en"),
           ManifestRecord("planted-silent", str(root / "silent.wav"), 1.0, "a silent file", "en"),
           ManifestRecord("planted-long", str(root / "long.wav"), 4.0, "a file that is too long", "en"),
           ManifestRecord("planted-empty-text", good[0].audio, 1.0, "", "en")]
    mixed = good[:2] + bad[:3] + good[2:4] + bad[3:] + good[4:]
    write_manifest(mixed, root / "planted.jsonl")
    return root / "planted.jsonl", planted


@pytest.mark.slow
def test_manifest_with_planted_bad_items_trains_to_the_end_and_reports_each(tmp_path):
    from holitok import HoliTok, get_preset_config

    manifest, planted = write_planted_manifest(tmp_path)
    torch.manual_seed(0)
    HoliTok(get_preset_config("tiny")).save_pretrained(tmp_path / "tokenizer")
    extracted = subprocess.run(
        [sys.executable, "-m", "data_prep.extract_latents", "--manifest", str(manifest), "--tokenizer",
         str(tmp_path / "tokenizer"), "--out", str(tmp_path / "latents"), "--shard_size", "4", "--max_seconds", "3.5",
         "--no_progress"], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    # a second store with the faults only training can see (NaN latents, too long/short, empty transcript)
    write_toy_store(tmp_path / "toy", num_items=8, seed=3, plant_bad=True, long_frames=300)
    planted.update({"bad-nan": "non-finite", "bad-long": "over-long", "bad-empty-text": "empty-text",
                    "bad-short": "too-short"})
    out = tmp_path / "run"
    sets = [f"data.datasets=[{{name: synth, latents: '{tmp_path / 'latents'}'}}, "
            f"{{name: toy, latents: '{tmp_path / 'toy'}'}}]"]
    done = train(overrides(tmp_path / "unused", out, steps=8, save_every=100)
                 + [arg for s in sets for arg in ("--set", s)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [m["step"] for m in metrics(out)] == list(range(1, 9))
    reported = json.loads((out / "bad_items.json").read_text())
    assert {k: v.split(":")[0] for k, v in reported.items()} == planted
    log = done.stdout + done.stderr
    assert f"{len(planted)} bad items skipped" in log and all(item_id in log for item_id in planted)


@pytest.mark.slow
def test_a_forced_text_pointer_trains_on_an_aligned_store_and_refuses_an_unaligned_one(tmp_path):
    from data_prep.align_latents import align_store
    from holitok_slm.model.unified import UnifiedModel

    store = tmp_path / "store"
    write_toy_store(store, num_items=12, frames=(40, 60), seed=1)
    ctc = ["model.flow.asr_ctc_weight=1.0", "model.flow.ctc_steps_per_patch=4"]
    aligner = tmp_path / "aligner"
    done = train(overrides(store, aligner, steps=2, save_every=2, extra=ctc))
    assert done.returncode == 0, done.stderr[-3000:]
    forced = [*ctc, "model.text_pointer=true", "model.text_pointer_alignment=forced"]
    refused = train(overrides(store, tmp_path / "early", steps=2, save_every=2, extra=forced))
    assert refused.returncode != 0 and "align_latents" in refused.stderr  # no alignment yet: said, not guessed
    align_store(store, UnifiedModel.from_pretrained(aligner / "final"), "aligner", progress=False)
    out = tmp_path / "forced"
    done = train(overrides(store, out, steps=3, save_every=3,
                           extra=[*forced, f"train.init_dit_from='{aligner / 'final'}'",
                                  "train.init_dit_prefixes=[backbone., dit.]",
                                  "data.tts_prompt_share=1.0"]))  # aligned prompt items go through the trainer too
    assert done.returncode == 0, done.stderr[-3000:]
    logged = [m for m in metrics(out) if "pace_loss" in m]
    assert logged and all(np.isfinite(m["pace_loss"]) for m in logged)
    assert "pace_head.weight" in load_file(str(out / "final" / "model.safetensors"))
    assert UnifiedModel.from_pretrained(out / "final").aligner is None  # a unified model's CTC aligned it
    # aligned by a CTCAligner: the model keeps it, so its TTS aligns prompts the way its data was aligned
    from data_prep.train_aligner import train_aligner
    from holitok_slm.model.ctc_aligner import CTCAlignerConfig
    from holitok_slm.train.latent_store import LatentStore
    from holitok_slm.train.model_setup import store_aligner

    tok = UnifiedModel.from_pretrained(aligner / "final").text_tokenizer
    reader, _ = train_aligner(store, tok, steps=2, batch_size=2, held_out=2, config=CTCAlignerConfig(width=16),
                              progress=False)
    reader.save_pretrained(tmp_path / "reader")
    align_store(store, reader, str(tmp_path / "reader"), overwrite=True, progress=False)
    out = tmp_path / "forced_by_reader"
    asr_only = tmp_path / "asr_only"  # never aligned: an ASR-only store needs no forced alignment
    write_toy_store(asr_only, num_items=12, frames=(40, 60), seed=2)
    datasets = f"data.datasets=[{{name: toy, latents: '{store}'}}, {{name: more, latents: '{asr_only}', tasks: [asr]}}]"
    same_text_units = f"model.text_tokenizer.path='{aligner / 'final' / 'text_tokenizer' / 'spm.model'}'"
    done = train(overrides(store, out, steps=2, save_every=2,
                           extra=[*forced, datasets, same_text_units, "data.task_ratio={tts: 1, asr: 1}"]))
    assert done.returncode == 0, done.stderr[-3000:]
    kept = UnifiedModel.from_pretrained(out / "final").aligner
    assert kept is not None and torch.equal(kept.out.weight, reader.out.weight)
    shutil.rmtree(tmp_path / "reader")
    with pytest.raises(ValueError, match="not there any more"):
        store_aligner(UnifiedModel.from_pretrained(out / "final").config, [LatentStore(store)])
