"""Encode every utterance of a manifest with HoliTok once, into a sharded latent store that training reads.

  python -m data_prep.extract_latents --manifest data/synth/train.jsonl --tokenizer runs/tokenizer \
      --out data/synth/latents/train
  accelerate launch -m data_prep.extract_latents ...                      # shards spread over processes / GPUs
  ... --semantic runs/tokenizer/semantic                                   # Unite: also store semantic features
  ... --speed_range 0.85 1.15 --out data/synth/latents/train_speed        # a speed-perturbed copy (ASR augmentation)
  ... --bandwidths_khz 4 8 24 --snr_db 15 40                               # channel-perturbed (telephone band, noise)

Resumable: shards are written atomically and a rerun skips the complete ones, so an interrupted run followed by
a rerun gives the same files as one uninterrupted run. Missing, unreadable, silent, empty and over-long audio is
skipped and listed in index.json ("skipped") and in each shard's JSON.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data_prep.manifest import ManifestRecord, iter_manifest
from holitok_slm.train.distributed import partial_state_kwargs
from holitok_slm.train.latent_store import FORMAT, shard_complete, shard_name, write_shard

FRAME_RATE = 25.0  # HoliTok latent frames per second


@dataclass
class ExtractionSettings:
    manifest: str
    manifest_sha1: str
    tokenizer: str
    semantic: str | None
    shard_size: int
    batch_size: int
    max_seconds: float
    silence_dbfs: float
    dtype: str = "float32"  # storage dtype of the shards (holitok_slm/train/latent_store.py STORE_DTYPES)
    # Speed perturbation: each utterance played faster by a factor drawn uniformly from this [low, high] range (pitch,
    # formants and tempo together, as a resampled render: another plausible speaker), fixed per item id and seed so
    # that a resumed or re-sharded run writes the same store. None = the audio as it is.
    speed_range: list[float] | None = None
    speed_seed: int = 0
    # Channel perturbation (also ASR augmentation): each utterance band-limited to one of these bandwidths in kHz
    # (resampled to twice the bandwidth and back; 4 is the telephone band, 24 leaves it whole) and given white noise
    # at an SNR (dB, against the utterance's RMS) drawn from snr_db [low, high]; fixed per item id and speed_seed.
    # None = the channel as it is.
    bandwidths_khz: list[float] | None = None
    snr_db: list[float] | None = None


def item_speed(item_id: str, speed_range: list[float] | None, seed: int) -> float:
    """The speed factor of one item: a function of its id and the seed only (not of the shard or the process)."""
    if speed_range is None:
        return 1.0
    low, high = speed_range
    unit = int.from_bytes(hashlib.sha1(f"{seed}:{item_id}".encode()).digest()[:8], "big") / 2 ** 64
    return round(low + (high - low) * unit, 4)


def item_channel(item_id: str, bandwidths_khz: list[float] | None, snr_db: list[float] | None,
                 seed: int) -> tuple[float | None, float | None, int]:
    """(bandwidth in kHz or None, SNR in dB or None, noise seed) of one item: a function of its id and the seed only."""
    digest = hashlib.sha1(f"{seed}:channel:{item_id}".encode()).digest()
    first, second = (int.from_bytes(digest[i:i + 8], "big") / 2 ** 64 for i in (0, 8))
    bandwidth = bandwidths_khz[int(first * len(bandwidths_khz))] if bandwidths_khz else None
    snr = round(snr_db[0] + (snr_db[1] - snr_db[0]) * second, 2) if snr_db else None
    return bandwidth, snr, int.from_bytes(digest[16:20], "big")


def change_channel(audio: torch.Tensor, bandwidth_khz: float | None, snr_db: float | None,
                   noise_seed: int) -> torch.Tensor:
    """48 kHz audio band-limited to `bandwidth_khz` (through a sample rate of twice it) plus white noise `snr_db` below
    the audio's RMS; the length is kept."""
    from holitok.audio import MODEL_SAMPLE_RATE, resample

    if bandwidth_khz is None and snr_db is None:
        return audio
    wav = audio.numpy().astype(np.float32)
    if bandwidth_khz is not None and 2000 * bandwidth_khz < MODEL_SAMPLE_RATE:
        low = round(2000 * bandwidth_khz)
        back = resample(resample(wav, MODEL_SAMPLE_RATE, low), low, MODEL_SAMPLE_RATE)
        wav = np.pad(back, (0, max(0, len(wav) - len(back))))[: len(wav)]
    if snr_db is not None:
        rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
        noise = np.random.default_rng(noise_seed).standard_normal(len(wav)).astype(np.float32)
        wav = wav + noise * rms * 10 ** (-snr_db / 20)
    return torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))


def change_speed(audio: torch.Tensor, factor: float) -> torch.Tensor:
    """48 kHz audio played `factor` times faster: the samples read as if recorded at 48000 * factor Hz."""
    from holitok.audio import MODEL_SAMPLE_RATE, resample

    if factor == 1.0:
        return audio
    faster = resample(audio.numpy(), round(MODEL_SAMPLE_RATE * factor), MODEL_SAMPLE_RATE)
    return torch.from_numpy(np.ascontiguousarray(faster))


def load_checked_audio(record: ManifestRecord, max_seconds: float, silence_dbfs: float):
    """48 kHz mono float tensor, or (None, reason) when the item must be skipped."""
    from holitok.audio import AudioError, load_audio

    if not record.text.strip():
        return None, "empty-text: transcript is empty"
    if record.audio is None or not Path(record.audio).is_file():
        return None, f"missing: audio file not found: {record.audio}"
    try:
        audio = load_audio(record.audio)
    except AudioError as err:
        return None, f"corrupt: {err}"
    seconds = audio.shape[-1] / 48000
    if seconds > max_seconds:
        return None, f"over-long: {seconds:.1f} s > {max_seconds} s"
    peak = float(audio.abs().max())
    if peak <= 10 ** (silence_dbfs / 20):
        return None, f"silent: peak {20 * math.log10(max(peak, 1e-12)):.1f} dBFS <= {silence_dbfs} dBFS"
    return audio, None


@torch.no_grad()
def encode_batch(tokenizer, semantic, audios: list[torch.Tensor], device) -> tuple[list, list | None]:
    """Posterior means [T, D] (and semantic features [T, H]) of a list of waveforms, padded into one batch."""
    lengths = torch.tensor([a.shape[-1] for a in audios])
    batch = torch.zeros(len(audios), 1, int(lengths.max()))
    for i, audio in enumerate(audios):
        batch[i, 0, : audio.shape[-1]] = audio
    batch, lengths = batch.to(device), lengths.to(device)
    mu = tokenizer.posterior_mean(tokenizer.forward_posterior(batch, lengths if len(audios) > 1 else None))
    frames = tokenizer.num_frames(lengths).tolist()
    latents = [mu[i, :, :n].transpose(0, 1).float().cpu() for i, n in enumerate(frames)]
    feats = None
    if semantic is not None:
        hidden = semantic(mu.transpose(1, 2), torch.tensor(frames, device=device))
        feats = [hidden[i, :n].float().cpu() for i, n in enumerate(frames)]
    return latents, feats


def extract_shard(records: list[ManifestRecord], tokenizer, semantic, settings: ExtractionSettings, device
                  ) -> tuple[list[dict], list, list | None, list[dict]]:
    items, latents, feats, skipped = [], [], [] if semantic is not None else None, []
    # record, audio as encoded, its speed factor and channel (bandwidth, SNR, noise seed): drawn once per item
    pending: list[tuple[ManifestRecord, torch.Tensor, float, tuple]] = []

    def flush():
        if not pending:
            return
        lat, sem = encode_batch(tokenizer, semantic, [audio for _, audio, _, _ in pending], device)
        for (record, audio, speed, (bandwidth, snr, _)), z, index in zip(pending, lat, range(len(lat))):
            item = {"id": record.id, "text": record.text, "language": record.language, "speaker": record.speaker,
                    "task": record.task, "num_frames": int(z.shape[0]), "duration": record.duration}
            if settings.speed_range is not None:
                item["speed"], item["duration"] = speed, round(audio.shape[-1] / 48000, 4)
            if bandwidth is not None:
                item["bandwidth_khz"] = bandwidth
            if snr is not None:
                item["snr_db"] = snr
            items.append(item)
            latents.append(z)
            if feats is not None:
                feats.append(sem[index])
        pending.clear()

    for record in records:
        audio, reason = load_checked_audio(record, settings.max_seconds, settings.silence_dbfs)
        if reason:
            skipped.append({"id": record.id, "reason": reason})
            continue
        speed = item_speed(record.id, settings.speed_range, settings.speed_seed)
        channel = item_channel(record.id, settings.bandwidths_khz, settings.snr_db, settings.speed_seed)
        audio = change_channel(change_speed(audio, speed), *channel)
        if audio.shape[-1] / 48000 > settings.max_seconds:  # slowed down past the limit
            skipped.append({"id": record.id, "reason": f"over-long: {audio.shape[-1] / 48000:.1f} s > "
                                                      f"{settings.max_seconds} s after the speed change"})
            continue
        pending.append((record, audio, speed, channel))
        if len(pending) >= settings.batch_size:
            flush()
    flush()
    return items, latents, feats, skipped


def sha1_of(path: str | Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_models(settings: ExtractionSettings, device):
    from holitok import HoliTok, SemanticModule

    tokenizer = HoliTok.from_pretrained(settings.tokenizer, device=device, local_files_only=True).eval()
    semantic = None
    if settings.semantic:
        semantic = SemanticModule.from_pretrained(settings.semantic).to(device).eval()
    return tokenizer, semantic


def extract(settings: ExtractionSettings, out: str | Path, progress: bool = True) -> dict:
    """Runs (or resumes) the extraction on every process of the current accelerate launch; returns index.json."""
    from accelerate import PartialState

    state = PartialState(**partial_state_kwargs())
    out = Path(out)
    settings_path = out / "extraction.json"
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if settings_path.exists():
            previous = json.loads(settings_path.read_text())
            previous.setdefault("dtype", "float32")  # stores started before these options
            previous.setdefault("speed_range", None)
            previous.setdefault("speed_seed", 0)
            previous.setdefault("bandwidths_khz", None)
            previous.setdefault("snr_db", None)
            if previous != asdict(settings):
                changed = sorted(k for k in previous if previous.get(k) != asdict(settings).get(k))
                raise SystemExit(f"{out} was started with different settings ({', '.join(changed)} changed); "
                                 "finish it with the same arguments or choose another --out")
        else:
            settings_path.write_text(json.dumps(asdict(settings), indent=2))
        for torn in out.glob("*.partial"):  # left by a run killed mid-write; the shard is redone
            torn.unlink()
    state.wait_for_everyone()
    # One pass over the manifest keeps only this process's unfinished shards in memory (a 100K-hour manifest has
    # tens of millions of lines; every process would otherwise hold all of them).
    pending: dict[int, list[ManifestRecord]] = {}
    finished: dict[int, bool] = {}
    count = 0
    for count, record in enumerate(iter_manifest(settings.manifest), 1):
        shard = (count - 1) // settings.shard_size
        if shard % state.num_processes != state.process_index:
            continue
        if shard not in finished:
            finished[shard] = shard_complete(out, shard)
        if not finished[shard]:
            pending.setdefault(shard, []).append(record)
    num_shards = max(1, math.ceil(count / settings.shard_size))
    if count == 0 and state.process_index == 0 and not shard_complete(out, 0):
        pending[0] = []  # an empty manifest still gets its (empty) shard, and write_index says why it stops
    todo = sorted(pending)
    if todo:
        tokenizer, semantic = load_models(settings, state.device)
        bar = tqdm(todo, desc=f"extracting [rank {state.process_index}]", unit="shard", position=state.process_index,
                   disable=not progress)
        started, frames = time.perf_counter(), 0
        for shard in bar:
            part = pending.pop(shard)
            items, latents, feats, skipped = extract_shard(part, tokenizer, semantic, settings, state.device)
            write_shard(out, shard, items, latents, feats, skipped, settings.dtype)
            frames += sum(item["num_frames"] for item in items)
        minutes = (time.perf_counter() - started) / 60
        hours = frames / FRAME_RATE / 3600
        # Throughput per process (one GPU each under accelerate): what sizes a 100K-hour extraction.
        print(f"[rank {state.process_index}] extracted {hours:.3f} h of audio in {minutes:.2f} min on {state.device}: "
              f"{hours / max(minutes, 1e-9):.3f} audio hours per process-minute", flush=True)
    state.wait_for_everyone()
    index = None
    if state.is_main_process:
        index = write_index(out, num_shards, settings)
    state.wait_for_everyone()
    return index or json.loads((out / "index.json").read_text())


def write_index(out: Path, num_shards: int, settings: ExtractionSettings) -> dict:
    from safetensors import safe_open

    skipped, num_items, frames, latent_dim, semantic_dim, shard_items = [], 0, 0, None, None, []
    for shard in range(num_shards):
        meta = json.loads((out / f"{shard_name(shard)}.json").read_text())
        skipped.extend(meta["skipped"])
        num_items += len(meta["items"])
        shard_items.append(len(meta["items"]))
        frames += sum(item["num_frames"] for item in meta["items"])
        if meta["items"] and latent_dim is None:
            with safe_open(str(out / f"{shard_name(shard)}.safetensors"), framework="pt") as handle:
                latent_dim = handle.get_slice("latents").get_shape()[1]
                if "semantic" in handle.keys():
                    semantic_dim = handle.get_slice("semantic").get_shape()[1]
    if latent_dim is None:
        raise SystemExit(f"no usable item in {settings.manifest}: all {len(skipped)} items were skipped")
    index = {"format": FORMAT, "num_shards": num_shards, "num_items": num_items, "num_frames": frames,
             "hours": round(frames / FRAME_RATE / 3600, 4), "latent_dim": latent_dim, "semantic_dim": semantic_dim,
             "frame_rate": FRAME_RATE, "dtype": settings.dtype, "tokenizer": settings.tokenizer,
             "manifest": settings.manifest, "shard_items": shard_items, "skipped": skipped}
    (out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False))
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", required=True, help="latent store folder")
    parser.add_argument("--tokenizer", required=True, help="HoliTok save_pretrained dir, model.pt, or preset name")
    parser.add_argument("--semantic", help="SemanticModule dir or semantic.pt: also store semantic features (Unite)")
    parser.add_argument("--shard_size", type=int, default=512, help="utterances per shard")
    parser.add_argument("--batch_size", type=int, default=1, help="utterances encoded together (GPU: 16-64)")
    parser.add_argument("--max_seconds", type=float, default=30.0, help="longer audio is skipped")
    parser.add_argument("--silence_dbfs", type=float, default=-60.0, help="audio whose peak is below is skipped")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="storage dtype of the latents (half: half the disk; read back as float32; the bounds are "
                             "in holitok_slm/train/latent_store.py)")
    parser.add_argument("--speed_range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="speed perturbation: each item played faster by a factor drawn from [LOW, HIGH] (fixed per "
                             "item id and --speed_seed); pitch, formants and tempo change together (a store for ASR augmentation)")
    parser.add_argument("--speed_seed", type=int, default=0, help="seed of the speed and channel draws")
    parser.add_argument("--bandwidths_khz", type=float, nargs="+", metavar="KHZ",
                        help="channel perturbation: each item band-limited to one of these bandwidths (4: telephone, "
                             "24: whole), fixed per item id and --speed_seed (a store for ASR augmentation)")
    parser.add_argument("--snr_db", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="channel perturbation: white noise at an SNR drawn from [LOW, HIGH] dB per item")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    if args.speed_range is not None and not 0.5 <= args.speed_range[0] <= args.speed_range[1] <= 2.0:
        parser.error(f"--speed_range needs 0.5 <= LOW <= HIGH <= 2.0, got {args.speed_range}")
    if args.bandwidths_khz is not None and not all(1.0 <= b <= 24.0 for b in args.bandwidths_khz):
        parser.error(f"--bandwidths_khz must lie in [1, 24] kHz, got {args.bandwidths_khz}")
    if args.snr_db is not None and not args.snr_db[0] <= args.snr_db[1]:
        parser.error(f"--snr_db needs LOW <= HIGH, got {args.snr_db}")
    settings = ExtractionSettings(
        manifest=str(Path(args.manifest).resolve()), manifest_sha1=sha1_of(args.manifest), tokenizer=args.tokenizer,
        semantic=args.semantic, shard_size=args.shard_size, batch_size=args.batch_size,
        max_seconds=args.max_seconds, silence_dbfs=args.silence_dbfs, dtype=args.dtype,
        speed_range=list(args.speed_range) if args.speed_range is not None else None, speed_seed=args.speed_seed,
        bandwidths_khz=list(args.bandwidths_khz) if args.bandwidths_khz is not None else None,
        snr_db=list(args.snr_db) if args.snr_db is not None else None)
    with torch.no_grad():  # scoped: main() is also called in-process (tests, the demo pipeline)
        index = extract(settings, args.out, progress=not args.no_progress)
    from accelerate import PartialState
    if PartialState().is_main_process:
        print(f"{index['num_items']} items, {index['hours']} h of latents in {args.out}; "
              f"skipped {len(index['skipped'])}")
        for entry in index["skipped"][:20]:
            print(f"  skipped {entry['id']}: {entry['reason']}")


if __name__ == "__main__":
    main()
