"""How generable a tokenizer's latents are: their smoothness in time and how much error the decoder reads through.

    python -m eval.latent_robustness --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        [--split seen] [--limit 6] [--noise 0.3,0.6,1.0] [--out outputs/latent_robustness.json]

A TTS model only approximates the latents it was trained on; a latent space is useful to it when the decoder still
speaks from approximate latents. On held-out utterances (posterior means) this measures:
  * the lag-1 (one frame) autocorrelation of each dimension, variance-weighted, and the dimensions left unused
    (under 1 % of the largest variance);
  * the posterior's own noise: its mean standard deviation relative to the latents' spread (0 for a plain
    autoencoder; a VAE decoder was trained to read through this much);
  * Whisper-base WER of the decoded latents: true, with Gaussian noise of each `--noise` level times each
    dimension's std added, and after a 3-frame moving average (a blur, what a regression to the mean makes).
docs/learning.md sections 9 and 11 read these numbers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .asr_wer import score
from .report import SPLITS, add_corpus_arguments, spread_over_voices, write_json


def lag1_autocorrelation(latents: list[torch.Tensor]) -> tuple[float, int]:
    """Variance-weighted lag-1 autocorrelation over dimensions of [T, D] items, and the count of unused dimensions."""
    stacked = torch.cat(latents)
    mean, var = stacked.mean(0), stacked.var(0)
    products = torch.cat([(x[1:] - mean) * (x[:-1] - mean) for x in latents]).mean(0)
    per_dim = products / var.clamp(min=1e-12)
    weighted = float((per_dim * var).sum() / var.sum())
    unused = int((var < 0.01 * var.max()).sum())
    return weighted, unused


def moving_average(latents: torch.Tensor, width: int = 3) -> torch.Tensor:
    """[T, D] averaged over `width` frames centred on each (edges replicate)."""
    padded = torch.nn.functional.pad(latents.T[None], (width // 2, width // 2), mode="replicate")
    return torch.nn.functional.avg_pool1d(padded, width, stride=1)[0].T


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser, model_required=False)
    parser.add_argument("--split", choices=sorted(SPLITS), default="seen")
    parser.add_argument("--limit", type=int, default=6, help="utterances, spread over the split's voices")
    parser.add_argument("--noise", default="0.3,0.6,1.0", help="noise levels, in units of each dimension's std")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/latent_robustness.json", help="the results as JSON")
    args = parser.parse_args(argv)
    levels = [float(x) for x in args.noise.split(",") if x.strip()]

    from data_prep.manifest import read_manifest
    from holitok import HoliTok
    from holitok.audio import load_audio

    from .audio_metrics import MissingJudgeError
    from .judges import make_asr_judge

    try:
        judge = make_asr_judge(args.asr_judge)
    except MissingJudgeError as err:
        parser.exit(2, f"eval.latent_robustness: {err}\n")
    codec = HoliTok.from_pretrained(args.tokenizer).eval()
    records = read_manifest(Path(args.corpus) / SPLITS[args.split])
    chosen = spread_over_voices(records, args.limit)
    if not chosen:
        parser.exit(2, f"eval.latent_robustness: no utterances in {args.corpus}/{SPLITS[args.split]}\n")

    means, stds = [], []
    with torch.no_grad():
        for record in chosen:
            audio = load_audio(record.audio, target_sample_rate=codec.sample_rate)
            posterior = codec.encode_posterior(audio[None, None])[0]
            mean, log_std = posterior.chunk(2, dim=0)
            means.append(mean.T)
            stds.append(log_std.exp().T)
    autocorrelation, unused = lag1_autocorrelation(means)
    spread = torch.cat(means).std(0)
    posterior_noise = float((torch.cat(stds).mean(0) / spread.clamp(min=1e-12))[spread >= 0.1 * spread.max()].mean())

    generator = torch.Generator().manual_seed(args.seed)
    variants = {"true": lambda z: z, "3-frame average": moving_average}
    for level in levels:
        variants[f"noise {level:g} std"] = (
            lambda z, level=level: z + level * spread * torch.randn(z.shape, generator=generator))
    refs, hyps = [r.text for r in chosen], {name: [] for name in variants}
    with torch.no_grad():
        for z in means:
            for name, change in variants.items():
                wav = codec.decode(change(z).T[None])[0, 0]
                hyps[name].append(judge.transcribe(wav.numpy(), codec.sample_rate))
    report = {"tokenizer": args.tokenizer, "split": args.split, "utterances": len(refs), "judge": judge.name,
              "lag1_autocorrelation": autocorrelation, "unused_dimensions": unused, "latent_dim": codec.latent_dim,
              "posterior_std_over_spread": posterior_noise,
              "wer": {name: score(refs, hyps[name]).corpus_wer for name in variants},
              "items": [{"text": t, **{name: hyps[name][i] for name in variants}} for i, t in enumerate(refs)]}
    print(f"lag-1 autocorrelation {autocorrelation:.3f}, unused dimensions {unused} of {codec.latent_dim}, "
          f"posterior std / latent spread {posterior_noise:.3f}")
    for name, value in report["wer"].items():
        print(f"WER, {name}: {value:.1%}")
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
