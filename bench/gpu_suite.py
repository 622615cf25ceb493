"""The one prepared GPU run (issue 12 points 2-4): paper-size TTS/ASR speed, tokenizer decode in half precision with
its error against float32, a unified training step's throughput / MFU / peak memory, and latent-extraction throughput;
everything into one JSON report.

    python bench/gpu_suite.py --out bench/gpu_suite.json                 # a GPU machine (a few minutes on one H200)
    python bench/gpu_suite.py --smoke --out /tmp/gpu_suite_smoke.json    # tiny configs on CPU: every code path

Random weights (speed does not depend on the values). TTS: `generate_latents` with 10 Euler steps and CFG, the length
fixed by min/max patches so every run makes the same number of patches; RTF = seconds of compute per second of audio
(batch 1), throughput = audio seconds per second (batch 16); on CUDA both again with `cuda_graph` (each patch's Euler
loop, both CFG branches, replayed from one captured graph). ASR: batched greedy decoding of 10 s latents, a fixed
number of new tokens. Half precision is torch.autocast (bf16), the same code path as float32. MFU = 6 x trainable
parameters x trained positions per second / the device's peak dense bf16 FLOP/s (`--peak_tflops`, H200: 989).
Nothing here is a timed test: CI runs `--smoke` only to check that the code paths work (tests/test_bench_gpu_suite.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
PATCH_RATE_HZ = 6.25  # 4 latent frames of 40 ms per patch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def build_unified(smoke: bool, device: torch.device):
    from holitok_slm.config import load_unified_config
    from holitok_slm.model.unified import UnifiedModel

    if smoke:
        from holitok_slm.tiny import build_tiny_model

        workdir = tempfile.mkdtemp(prefix="gpu_suite_smoke_")
        model = build_tiny_model(["a few words of text for a tiny vocabulary", "and some more of them"] * 20, workdir)
    else:
        model = UnifiedModel.from_config(load_unified_config(ROOT / "configs" / "unified" / "model_base.yaml"))
    return model.to(device).eval()


def bench_tts(model, device, batch: int, seconds: float, half: bool, repeats: int, cuda_graph: bool = False) -> dict:
    from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents

    patches = max(1, round(seconds * PATCH_RATE_HZ))
    prompt = torch.randn(3 * 25, model.config.latent_dim, device=device)
    requests = [TTSRequest("the quick brown fox jumps over the lazy dog " * 2, prompt_latents=prompt,
                           prompt_text="a short prompt sentence") for _ in range(batch)]
    options = TTSOptions.from_model(model, steps=10, cfg_strength=2.0, min_patches=patches, max_patches=patches,
                                    cuda_graph=cuda_graph, static_cache=cuda_graph)
    generator = torch.Generator(device=device).manual_seed(0)

    def run():
        with torch.inference_mode(), autocast(device, half):
            generate_latents(model, requests, options, generator)

    elapsed = timed(run, device, repeats)
    audio = patches / PATCH_RATE_HZ
    return {"batch": batch, "audio_seconds_each": audio, "seconds": elapsed, "rtf": elapsed / audio,
            "audio_seconds_per_second": batch * audio / elapsed, "bf16": half, "cuda_graph": cuda_graph}


def bench_asr(model, device, batch: int, seconds: float, half: bool, repeats: int, new_tokens: int) -> dict:
    from holitok_slm.infer.asr import transcribe_latents

    latents = [torch.randn(int(seconds * 25), model.config.latent_dim, device=device) for _ in range(batch)]

    def run():
        with torch.inference_mode(), autocast(device, half):
            transcribe_latents(model, latents, max_new_tokens=new_tokens)

    elapsed = timed(run, device, repeats)
    return {"batch": batch, "audio_seconds_each": seconds, "max_new_tokens": new_tokens, "seconds": elapsed,
            "times_real_time": batch * seconds / elapsed, "bf16": half}


def bench_codec(smoke: bool, device, seconds: float, repeats: int, batch: int) -> dict:
    """Decode RTF in float32 and bf16 (with the bf16 output's error), and encode throughput for extraction."""
    from holitok import HoliTok, get_preset_config

    torch.manual_seed(0)
    codec = HoliTok(get_preset_config("tiny" if smoke else "HoliTok-Base")).to(device).eval()
    latents = torch.randn(1, codec.latent_dim, int(seconds * codec.sample_rate / codec.hop_size), device=device)
    out = {}
    with torch.inference_mode():
        reference = codec.decode(latents).float()
        for name, half in (("float32", False), ("bf16", True)):
            def run():
                with autocast(device, half):
                    return codec.decode(latents)
            elapsed = timed(run, device, repeats)
            with autocast(device, half):
                wav = codec.decode(latents).float()
            error = (wav - reference).abs()
            out[f"decode_{name}"] = {"seconds": elapsed, "rtf": elapsed / seconds,
                                     "max_abs_error_vs_float32": float(error.max()),
                                     "rms_error_vs_float32": float(error.pow(2).mean().sqrt())}
        audio = torch.randn(batch, 1, int(seconds * codec.sample_rate), device=device) * 0.1
        elapsed = timed(lambda: codec.encode(audio), device, repeats)
    out["extraction"] = {"batch": batch, "audio_seconds_each": seconds, "seconds": elapsed,
                         "audio_hours_per_gpu_minute": batch * seconds / 3600 / (elapsed / 60)}
    return out


def bench_training_step(model, device, half: bool, steps: int, items: int, seconds: float,
                        peak_tflops: float) -> dict:
    """Forward + backward + fused AdamW on a fixed batch (TTS and ASR items), like one train_unified.py step."""
    model.train()
    frames = int(seconds * 25)
    batch = model.collate([{"id": str(i), "task": "tts" if i % 6 else "asr", "text": "the quick brown fox " * 6,
                            "latents": torch.randn(frames, model.config.latent_dim)} for i in range(items)])
    batch = {k: v.to(device) for k, v in batch.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        with autocast(device, half):
            loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    elapsed = timed(step, device, steps)
    positions = int(batch["attention_mask"].sum())
    n_params = sum(p.numel() for p in params)
    tokens_per_second = positions / elapsed
    out = {"items": items, "frames_each": frames, "positions": positions, "seconds_per_step": elapsed,
           "positions_per_second": tokens_per_second, "trainable_parameters": n_params, "bf16": half,
           "mfu": 6 * n_params * tokens_per_second / (peak_tflops * 1e12) if device.type == "cuda" else None}
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    model.eval()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny configs, few repeats (checks the code paths)")
    parser.add_argument("--peak_tflops", type=float, default=989.0, help="the device's dense bf16 peak (H200: 989)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not args.smoke and device.type != "cuda":
        parser.error("the full suite needs a GPU; use --smoke to check the code paths on CPU")
    torch.manual_seed(0)
    repeats = 1 if args.smoke else 3
    half = device.type == "cuda"  # bf16 autocast is what users run on GPUs; CPU smoke runs stay in float32
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "smoke": args.smoke, "sections": {}}
    sections = report["sections"]
    started = time.time()
    model = build_unified(args.smoke, device)
    seconds = 1.0 if args.smoke else 10.0
    sections["tts_batch1"] = bench_tts(model, device, 1, seconds, half, repeats)
    if device.type == "cuda":  # Euler loop replayed from a CUDA graph + static KV cache (holitok_slm/infer/tts.py)
        sections["tts_batch1_cuda_graph"] = bench_tts(model, device, 1, seconds, half, repeats, cuda_graph=True)
        sections["tts_batch16_cuda_graph"] = bench_tts(model, device, 16, seconds, half, repeats, cuda_graph=True)
    sections["tts_batch16"] = bench_tts(model, device, 2 if args.smoke else 16, seconds, half, repeats)
    sections["asr_batch16"] = bench_asr(model, device, 2 if args.smoke else 16, seconds, half, repeats,
                                        4 if args.smoke else 64)
    sections["training_step"] = bench_training_step(model, device, half, 1 if args.smoke else 5,
                                                    2 if args.smoke else 24, 4.0 if args.smoke else 10.0,
                                                    args.peak_tflops)
    del model
    sections["codec"] = bench_codec(args.smoke, device, 0.4 if args.smoke else 10.0, repeats, 2 if args.smoke else 16)
    report["wall_seconds"] = time.time() - started
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
