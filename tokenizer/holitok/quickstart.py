"""Quickstart job: reconstruct the bundled clip offline and by streaming, write the audio, print what happened.

    python -m holitok.quickstart [--checkpoint DIR_OR_PT] [--input some.wav] [--output-dir outputs/quickstart]

Without --checkpoint it uses, in order: a tokenizer this project trained (`outputs/demo/tokenizer`, then the shipped
`weights/demo/tokenizer`), the authors' tiny conformance model (`../shared/golden/tiny_a`, random weights: the output is noise, the plumbing is real), or a
randomly initialised tiny model.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .audio import load_audio, save_audio
from .config import get_preset_config
from .model import HoliTok

BUNDLED_CLIP = Path(__file__).with_name("assets") / "hello.wav"
TRAINED_DEMO_TOKENIZER = Path("outputs/demo/tokenizer")
SHIPPED_TOKENIZER = Path(__file__).resolve().parents[2] / "weights" / "demo" / "tokenizer"
GOLDEN_TINY = Path(__file__).resolve().parents[3] / "shared" / "golden" / "tiny_a"


def pick_model(checkpoint: str | None) -> tuple[HoliTok, str]:
    if checkpoint:
        return HoliTok.from_pretrained(checkpoint, device="cpu"), checkpoint
    for candidate, label in ((TRAINED_DEMO_TOKENIZER, "tokenizer trained by this project"),
                             (SHIPPED_TOKENIZER, "tokenizer this repository ships"),
                             (GOLDEN_TINY, "authors' tiny conformance model (random weights)")):
        if candidate.is_dir():
            return HoliTok.from_pretrained(candidate, device="cpu"), f"{candidate} ({label})"
    torch.manual_seed(0)
    return HoliTok(get_preset_config("tiny")).eval().fold_weight_norm(), "random tiny model"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--input", default=str(BUNDLED_CLIP))
    ap.add_argument("--output-dir", default="outputs/quickstart")
    args = ap.parse_args(argv)
    model, label = pick_model(args.checkpoint)
    audio = load_audio(args.input)
    print(f"model : {label}  ({model.num_parameters() / 1e6:.2f}M params, latent {model.latent_dim} x "
          f"{model.frame_rate:g} Hz)")
    print(f"input : {args.input}  ({audio.shape[-1] / model.sample_rate:.2f} s at 48 kHz after resampling)")
    start = time.perf_counter()
    posterior = model.encode_posterior(audio)
    latents = model.posterior_mean(posterior)
    wav = model.decode(latents)[..., : audio.shape[-1]]
    elapsed = time.perf_counter() - start
    enc, dec = model.stream_encoder(), model.stream_decoder()
    chunk = model.hop_size * 5 + 123  # deliberately not frame-aligned
    streamed_post = torch.cat([enc.step(audio[i: i + chunk]) for i in range(0, audio.shape[-1], chunk)]
                              + [enc.flush()], dim=-1)
    streamed = torch.cat([dec.step(model.posterior_mean(streamed_post)), dec.flush()], dim=-1)
    out_dir = Path(args.output_dir)
    save_audio(out_dir / "reconstructed.wav", wav[0, 0])
    save_audio(out_dir / "reconstructed_streaming.wav", streamed[0, 0, : audio.shape[-1]])
    torch.save({"latents": latents.cpu(), "mode": "mean", "sample_rate": model.sample_rate,
                "hop_size": model.hop_size, "latent_dim": model.latent_dim, "num_samples": int(audio.shape[-1])},
               out_dir / "latents.pt")
    noise = (wav[0, 0] - audio).pow(2).mean()
    snr = 10 * torch.log10(audio.pow(2).mean() / noise.clamp_min(1e-12))
    print(f"latent: {tuple(latents.shape)}; encode+decode {elapsed:.2f} s "
          f"(RTF {elapsed / (audio.shape[-1] / model.sample_rate):.2f}); waveform SNR {snr:.1f} dB")
    print(f"stream: chunks of {chunk} samples -> max |streaming - offline| = "
          f"{(streamed[..., : wav.shape[-1]] - wav).abs().max():.2e}; algorithmic latency "
          f"{model.latency_ms['end_to_end']:.0f} ms")
    print(f"wrote : {out_dir}/reconstructed.wav, reconstructed_streaming.wav, latents.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
