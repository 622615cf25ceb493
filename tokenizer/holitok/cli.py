"""Command line: `holitok encode | decode | reconstruct | semantic`, the authors' flags plus --checkpoint PATH."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

PRESETS = ("HoliTok-Base", "HoliTok-Unite")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="HoliTok-Unite", help=f"preset {PRESETS} (default HoliTok-Unite)")
    p.add_argument("--config", help="model config JSON (overrides the preset's architecture)")
    p.add_argument("--checkpoint", help="model.pt, or a directory (ours: model.safetensors; authors': model.pt)")
    p.add_argument("--repo-id", help="hub repository to fetch preset checkpoints from")
    p.add_argument("--revision")
    p.add_argument("--cache-dir")
    p.add_argument("--local-files-only", action="store_true", help="never try the network")
    p.add_argument("--basic-config", help=argparse.SUPPRESS)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-sanitize-runtime", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help="seed for posterior sampling")
    p.add_argument("--noise-scale", type=float, default=1.0, help="posterior sampling temperature")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="holitok", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("encode", help="audio -> latents (.pt)")
    _common(p)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--mode", choices=["posterior", "mean", "sample"], default="sample")
    p = sub.add_parser("decode", help="latents (.pt) -> audio")
    _common(p)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--mode", choices=["posterior", "mean", "sample"], default="mean",
                   help="how to read the latents when the file does not say (a file's own 'mode' wins)")
    p.add_argument("--posterior-use-mean", action="store_true", help="decode a posterior's mean instead of a sample")
    p.add_argument("--posterior-do-sample", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("reconstruct", help="audio -> latents -> audio, trimmed to the input length")
    _common(p)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--mode", choices=["mean", "sample"], default="sample")
    p = sub.add_parser("semantic", help="audio or latents -> semantic features (.pt)")
    _common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input-audio")
    src.add_argument("--input-latents")
    p.add_argument("--output", required=True)
    p.add_argument("--semantic-checkpoint", help="semantic.pt or our semantic directory")
    p.add_argument("--mode", choices=["mean", "sample"], default="sample", help="latents from audio input")
    p.add_argument("--posterior-mode", choices=["mean", "sample"], default="sample",
                   help="how to turn a posterior latent file into latents")
    p.add_argument("--channel-last", action="store_true", help="latent file is already [B, T, D]")
    return parser


def _load_model(args):
    from .model import HoliTok
    source = args.checkpoint if args.checkpoint and Path(args.checkpoint).is_dir() else (args.config or args.model)
    checkpoint = args.checkpoint if args.checkpoint and not Path(args.checkpoint).is_dir() else None
    return HoliTok.from_pretrained(source, checkpoint, device=args.device, cache_dir=args.cache_dir,
                                   local_files_only=args.local_files_only, repo_id=args.repo_id,
                                   revision=args.revision)


def _generator(args, device) -> torch.Generator | None:
    if args.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(args.seed)


def _read_audio(path: str, model):
    from .audio import load_audio
    return load_audio(path, target_sample_rate=model.sample_rate).to(next(model.parameters()).device)


def _read_latent_file(path: str) -> dict:
    from .checkpoint import CheckpointError, read_torch_checkpoint
    payload = read_torch_checkpoint(path)
    if isinstance(payload, torch.Tensor):
        payload = {"latents": payload}
    if not isinstance(payload, dict) or not isinstance(payload.get("latents"), torch.Tensor):
        raise CheckpointError(f"{path} holds no 'latents' tensor (expected a file written by `holitok encode`)")
    return payload


def cmd_encode(args) -> None:
    model = _load_model(args)
    audio = _read_audio(args.input, model)
    post = model.encode_posterior(audio)
    if args.mode == "posterior":
        latents = post
    elif args.mode == "mean":
        latents = model.posterior_mean(post)
    else:
        latents = model.sample_posterior(post, noise_scale=args.noise_scale, generator=_generator(args, post.device))
    torch.save({"latents": latents.cpu(), "mode": args.mode, "sample_rate": model.sample_rate,
                "hop_size": model.hop_size, "latent_dim": model.latent_dim, "num_samples": int(audio.shape[-1])},
               args.output)


def cmd_decode(args) -> None:
    from .audio import save_audio
    model = _load_model(args)
    payload = _read_latent_file(args.input)
    latents, mode = payload["latents"], payload.get("mode", args.mode)
    is_posterior = mode == "posterior" or latents.shape[-2] == 2 * model.latent_dim
    if is_posterior and args.posterior_use_mean:
        latents, is_posterior = model.posterior_mean(latents), False
    wav = model.decode(latents, do_sample=is_posterior, noise_scale=args.noise_scale,
                       generator=_generator(args, next(model.parameters()).device))
    if "num_samples" in payload:
        wav = wav[..., : int(payload["num_samples"])]
    save_audio(args.output, wav[0, 0], model.sample_rate)


def cmd_reconstruct(args) -> None:
    from .audio import save_audio
    model = _load_model(args)
    audio = _read_audio(args.input, model)
    wav = model.reconstruct(audio, sample=args.mode == "sample", noise_scale=args.noise_scale,
                            generator=_generator(args, audio.device))
    save_audio(args.output, wav[0, 0, : audio.shape[-1]], model.sample_rate)


def _semantic_source(args) -> str | Path:
    from .checkpoint import SEMANTIC_NAME, resolve_preset_file
    if args.semantic_checkpoint:
        return args.semantic_checkpoint
    if args.checkpoint:
        candidate = Path(args.checkpoint)
        candidate = (candidate if candidate.is_dir() else candidate.parent) / SEMANTIC_NAME
        if candidate.is_file():
            return candidate
    return resolve_preset_file(args.model, SEMANTIC_NAME, cache_dir=args.cache_dir,
                               local_files_only=args.local_files_only, repo_id=args.repo_id, revision=args.revision)


def cmd_semantic(args) -> None:
    from .semantic import SemanticModule
    source = _semantic_source(args)
    semantic = SemanticModule.from_pretrained(source, device=args.device or "cpu")
    device = next(semantic.parameters()).device
    if args.input_audio:
        model = _load_model(args)
        post = model.encode_posterior(_read_audio(args.input_audio, model))
        gen = _generator(args, post.device)
        z = model.sample_posterior(post, noise_scale=args.noise_scale, generator=gen) if args.mode == "sample" \
            else model.posterior_mean(post)
        latent_mode, z = args.mode, z.transpose(1, 2)
    else:
        payload = _read_latent_file(args.input_latents)
        z, latent_mode = payload["latents"].to(device), payload.get("mode", "mean")
        if not args.channel_last:
            z = z.transpose(1, 2)
        if z.shape[-1] == 2 * semantic.config.input_dim:  # a posterior file: take its mean or a sample
            post = z.transpose(1, 2)
            from .model import HoliTok
            z = (HoliTok.sample_posterior(post, noise_scale=args.noise_scale) if args.posterior_mode == "sample"
                 else HoliTok.posterior_mean(post)).transpose(1, 2)
            latent_mode = f"posterior-{args.posterior_mode}"
    with torch.no_grad():
        features = semantic(z.to(device))
    torch.save({"features": features.cpu(), "model": args.model, "latent_mode": latent_mode,
                "semantic_dim": semantic.hidden_size, "source": str(args.input_audio or args.input_latents),
                "metadata": {"semantic_checkpoint": str(source)}}, args.output)


COMMANDS = {"encode": cmd_encode, "decode": cmd_decode, "reconstruct": cmd_reconstruct, "semantic": cmd_semantic}


def main(argv: list[str] | None = None) -> int:
    from .audio import AudioError
    from .checkpoint import CheckpointError
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (AudioError, CheckpointError, FileNotFoundError, ValueError, KeyError, RuntimeError) as err:
        message = str(err).strip().replace("\n", " ") or type(err).__name__
        print(f"holitok {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
