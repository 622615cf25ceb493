"""Do a tokenizer's latents carry pitch? A small probe network reads F0 from them, scored against each voice's mean.

    python -m eval.latent_pitch_probe --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        [--train_items 240] [--test_items 40] [--reference_spectrum] [--out outputs/pitch_probe.json]

F0 per latent frame comes from the YIN tracker the pitch loss uses (holitok/train/pitch.py), voiced frames only. A
two-layer network reads log2 F0 from +-2 frames of posterior means, fitted on training utterances and scored on
held-out sentences of the training voices: the median error in cents and the share within 50 / 100 cents, next to
the error of guessing each voice's mean F0 (what a latent space without pitch allows). `--reference_spectrum`
fits the same probe on the audio's own low-frequency log spectrum, to show what the probe reads where pitch is
present. Whatever the probe says, the listener hears the decoder: `resynthesis` tracks the held-out items'
resynthesis (posterior mean) with the same tracker and scores its F0 against the original's on the frames both call
voiced, and for a tokenizer with the harmonic decoder head (holitok/harmonic_head.py) `decoder_f0` scores the F0
that head predicts and says what share of the output's spectral energy its pulse train carries. docs/learning.md
sections 31-33 read these numbers.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch

from .report import SPLITS, write_json

CONTEXT = 2  # frames either side


def frame_features(codec, records, spectrum: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor, list[str]]:
    """Per voiced latent frame, read once per utterance: the features by name ("latents", and with `spectrum` the
    audio's log spectrum below 1 kHz, each with +-CONTEXT frames), log2 F0 and the voice."""
    from holitok.audio import load_audio
    from holitok.pitch_track import yin_track

    features, targets, voices = {}, [], []
    for record in records:
        audio = load_audio(record.audio, target_sample_rate=codec.sample_rate)
        with torch.no_grad():
            latents = codec.encode(audio[None, None])[0].T  # [T, D]
        kinds = {"latents": latents}
        if spectrum:
            window = torch.hann_window(4096)
            magnitude = torch.stft(audio, 4096, codec.hop_size, window=window, return_complex=True).abs()
            kinds["spectrum"] = torch.log(magnitude[: 4096 * 1000 // codec.sample_rate].T[: len(latents)] + 1e-4)
        track = yin_track(audio[None], codec.sample_rate, codec.hop_size)
        count = min(len(latents), track.voiced.shape[1])
        voiced = track.voiced[0, :count]
        for name, frames in kinds.items():
            padded = torch.cat([frames[:1].expand(CONTEXT, -1), frames, frames[-1:].expand(CONTEXT, -1)])
            context = padded.unfold(0, 2 * CONTEXT + 1, 1)[:count].reshape(count, -1)  # [T, (2C+1) * D]
            features.setdefault(name, []).append(context[voiced])
        targets.append(track.log2_f0[0, :count][voiced])
        voices += [record.speaker or "?"] * int(voiced.sum())
    return {name: torch.cat(parts) for name, parts in features.items()}, torch.cat(targets), voices


def fit_probe(x: torch.Tensor, y: torch.Tensor, seed: int = 0, steps: int = 2000, batch: int = 512):
    """A 2 x 256 network fitted with AdamW on standardised inputs (minibatches); returns inputs -> log2 F0."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = x.mean(0), x.std(0) + 1e-6
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 256),
                              torch.nn.GELU(), torch.nn.Linear(256, 1))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    centre = y.mean()
    for _ in range(steps):
        rows = torch.randint(len(y), (batch,), generator=generator)
        loss = (net((x[rows] - mean) / std)[:, 0] + centre - y[rows]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    return lambda inputs: net((inputs - mean) / std)[:, 0].detach() + centre


def error_summary(predicted: torch.Tensor, target: torch.Tensor) -> dict:
    cents = (predicted - target).abs() * 1200
    return {"median_cents": float(cents.median()), "within_50_cents": float((cents < 50).float().mean()),
            "within_100_cents": float((cents < 100).float().mean())}


def probe(codec, train_records, test_records, spectrum: bool = False, seed: int = 0) -> dict:
    """{feature name: {frames, voice_mean, probe}} for the latents (and the spectrum with `spectrum`)."""
    x, y, voices = frame_features(codec, train_records, spectrum)
    tx, ty, test_voices = frame_features(codec, test_records, spectrum)
    if len(y) < 100 or len(ty) < 10:
        raise ValueError(f"too few voiced frames to probe ({len(y)} training, {len(ty)} held-out)")
    voice_mean = {v: y[[i for i, w in enumerate(voices) if w == v]].mean() for v in set(voices)}
    baseline = error_summary(torch.stack([voice_mean.get(v, y.mean()) for v in test_voices]), ty)
    results = {}
    for name in x:
        reader = fit_probe(x[name], y, seed)
        with torch.no_grad():
            predicted = reader(tx[name])
        results[name] = {"frames": {"train": len(y), "test": len(ty)}, "voice_mean": baseline,
                         "probe": error_summary(predicted, ty)}
    return results


def decoder_pitch(codec, records) -> dict:
    """The resynthesis' F0 (and a harmonic head's predicted F0) against the original's, per tracker frame."""
    from holitok.audio import load_audio
    from holitok.harmonic_head import REFERENCE_LOG2_F0, HarmonicISTFTHead
    from holitok.pitch_track import yin_track

    harmonic = isinstance(getattr(codec.decoder, "head", None), HarmonicISTFTHead)
    hop = codec.config.istft_hop if harmonic else codec.hop_size
    errors = {"resynthesis": [], "decoder_f0": []}
    agree = total = 0
    energy = [0.0, 0.0]  # a harmonic head's pulse train, its noise part

    def add_energy(module, inputs, output):  # activation_post's output is the head's input
        for i, value in enumerate(codec.decoder.head.pulse_energy(output)):
            energy[i] += value

    hook = codec.decoder.activation_post.register_forward_hook(add_energy) if harmonic else None
    for record in records:
        audio = load_audio(record.audio, target_sample_rate=codec.sample_rate)
        with torch.no_grad():
            latents = codec.encode(audio[None, None])
            decoded = codec.forward_decode(latents, with_pitch=harmonic)
        resynthesis, predicted = decoded if harmonic else (decoded, None)
        original = yin_track(audio[None], codec.sample_rate, hop)
        copy = yin_track(resynthesis[0, :, : audio.shape[-1]], codec.sample_rate, hop)
        count = min(original.voiced.shape[1], copy.voiced.shape[1])
        voiced = original.voiced[0, :count]
        both = voiced & copy.voiced[0, :count]
        agree += int((voiced == copy.voiced[0, :count]).sum())
        total += count
        errors["resynthesis"].append((copy.log2_f0[0, :count] - original.log2_f0[0, :count])[both])
        if predicted is not None:
            head_log2_f0 = predicted[0, 0, :count] + REFERENCE_LOG2_F0
            errors["decoder_f0"].append((head_log2_f0 - original.log2_f0[0, :count])[voiced])
    if hook is not None:
        hook.remove()
    results = {}
    for name, parts in errors.items():
        if parts:
            error = torch.cat(parts)
            summary = error_summary(error, torch.zeros_like(error)) if len(error) else {
                "median_cents": None, "within_50_cents": None, "within_100_cents": None}
            results[name] = {**summary, "frames": len(error)}
    results["resynthesis"]["voicing_agreement"] = agree / max(total, 1)
    if harmonic:
        results["decoder_f0"]["pulse_energy_share"] = energy[0] / max(sum(energy), 1e-30)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.latent_pitch_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="a data_prep.synth_corpus folder")
    parser.add_argument("--tokenizer", required=True, help="HoliTok dir, model.pt or preset name")
    parser.add_argument("--train_items", type=int, default=240)
    parser.add_argument("--test_items", type=int, default=40)
    parser.add_argument("--reference_spectrum", action="store_true",
                        help="also fit the probe on the audio's own log spectrum below 1 kHz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from data_prep.manifest import read_manifest
    from holitok import HoliTok

    corpus = Path(args.corpus)
    train = read_manifest(corpus / "train.jsonl")
    test = read_manifest(corpus / SPLITS["seen"])
    rng = random.Random(args.seed)
    train = rng.sample(train, min(args.train_items, len(train)))
    test = test[:: max(1, len(test) // args.test_items)][: args.test_items]
    codec = HoliTok.from_pretrained(args.tokenizer, device="cpu").eval()
    report = {"tokenizer": str(args.tokenizer), "corpus": str(corpus),
              **probe(codec, train, test, spectrum=args.reference_spectrum, seed=args.seed),
              **decoder_pitch(codec, test)}
    for name in ("latents", "spectrum"):
        if name in report:
            r = report[name]
            print(f"{name:9s} probe {r['probe']['median_cents']:6.1f} cents"
                  f" (within 50 c {r['probe']['within_50_cents']:.2f})"
                  f" | each voice's mean F0 {r['voice_mean']['median_cents']:6.1f} cents"
                  f" (within 50 c {r['voice_mean']['within_50_cents']:.2f}) | {r['frames']['test']} voiced frames")
    for name in ("resynthesis", "decoder_f0"):
        if name in report:
            r = report[name]
            if r["median_cents"] is None:
                print(f"{name:11s} F0: no frame voiced in both")
                continue
            print(f"{name:11s} F0 against the original's: {r['median_cents']:6.1f} cents median"
                  f" (within 50 c {r['within_50_cents']:.2f}) | {r['frames']} voiced frames"
                  + (f" | voicing agrees on {r['voicing_agreement']:.2f}" if "voicing_agreement" in r else "")
                  + (f" | pulse train {100 * r['pulse_energy_share']:.2f} % of the spectral energy"
                     if "pulse_energy_share" in r else ""))
    if args.out:
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
