"""Benchmark: HoliTok encode/decode real-time factor, offline (one pass) vs streaming/chunked, and peak memory.

    python bench/tokenizer_speed.py --model HoliTok-Base --seconds 10 --threads 2
    python bench/tokenizer_speed.py --model tiny --seconds 60 --chunk-frames 25

Random weights unless --checkpoint is given (speed does not depend on the values). Offline = the authors' graph in one
pass over the whole input (weight norm folded, as their runtime does for the decoder); chunked = our streaming path
(`decode(..., chunk_frames=N)`), which returns the same output (max |diff| printed). Ratios are measured in one run.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from holitok import HoliTok, get_preset_config


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def timed(fn, repeats: int) -> tuple[float, torch.Tensor, float]:
    out = fn()  # warm-up
    times = []
    reset_peak_rss()
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out, peak_rss_mb()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="HoliTok-Base", help="preset name (HoliTok-Base, tiny)")
    ap.add_argument("--checkpoint", help="load real weights from this path instead of random ones")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--chunk-frames", type=int, default=50, help="latent frames per streaming chunk")
    ap.add_argument("--skip-offline", action="store_true", help="only the chunked path (very long inputs)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        model = HoliTok.from_pretrained(args.checkpoint, device="cpu")
    else:
        model = HoliTok(get_preset_config(args.model)).eval().fold_weight_norm()
    n = int(args.seconds * model.sample_rate)
    audio = 0.1 * torch.randn(1, 1, n)
    rows = []
    with torch.inference_mode():
        results = {}
        for name, chunk in (("offline", None), (f"chunked({args.chunk_frames})", args.chunk_frames)):
            if chunk is None and args.skip_offline:
                continue
            t_enc, post, mem_enc = timed(lambda: model.encode_posterior(audio, chunk_frames=chunk), args.repeats)
            latents = model.posterior_mean(post)
            t_dec, wav, mem_dec = timed(lambda: model.decode(latents, chunk_frames=chunk), args.repeats)
            results[name] = (post, wav)
            rows.append((name, t_enc, t_enc / args.seconds, mem_enc, t_dec, t_dec / args.seconds, mem_dec))
    print(f"\nHoliTok {args.model}: {model.num_parameters() / 1e6:.1f}M params, {args.seconds:g} s of audio, "
          f"{torch.get_num_threads()} threads\n")
    print(f"{'path':<16}{'encode s':>10}{'enc RTF':>9}{'enc peak MB':>13}{'decode s':>10}{'dec RTF':>9}"
          f"{'dec peak MB':>13}")
    for name, te, re, me, td, rd, md in rows:
        print(f"{name:<16}{te:>10.2f}{re:>9.3f}{me:>13.0f}{td:>10.2f}{rd:>9.3f}{md:>13.0f}")
    if len(rows) == 2:
        (p0, w0), (p1, w1) = results.values()
        print(f"\nchunked vs offline: encode {rows[0][1] / rows[1][1]:.2f}x faster, decode "
              f"{rows[0][4] / rows[1][4]:.2f}x faster; max |diff| posterior {(p0 - p1).abs().max():.2e}, "
              f"waveform {(w0 - w1).abs().max():.2e}")
    print(f"algorithmic latency (ms): {model.latency_ms}")


if __name__ == "__main__":
    main()
