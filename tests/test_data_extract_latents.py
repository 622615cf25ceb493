"""Latent extraction: shards equal to direct encoding, interrupted + restarted (on 2 processes) == one pass,
bad audio skipped with reasons, Unite semantic features, settings guard."""
from __future__ import annotations

import json
import os
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

from data_prep.extract_latents import main as extract_main
from data_prep.manifest import ManifestRecord, read_manifest, write_manifest
from data_prep.synth_corpus import CorpusConfig, build_corpus
from holitok_slm.train.latent_store import LatentStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six short synthetic utterances plus a silent and a missing item, and a seeded random tiny tokenizer."""
    from holitok import HoliTok, SemanticConfig, SemanticModule, get_preset_config

    root = tmp_path_factory.mktemp("extract")
    build_corpus(root / "corpus", CorpusConfig(
        train_voices=["flite_slt", "espeak_gb_m3"], heldout_voices=["flite_rms"], train_utterances_per_voice=3,
        test_utterances_per_voice=1, train_sentence_pool=4, test_sentence_pool=2, max_words=5), progress=False)
    records = read_manifest(root / "corpus" / "train.jsonl")
    sf.write(root / "silent.wav", np.zeros(24000, dtype=np.float32), 48000)
    records.insert(2, ManifestRecord("silent-1", str(root / "silent.wav"), 0.5, "nothing to hear", "en"))
    records.insert(4, ManifestRecord("missing-1", str(root / "gone.wav"), 1.0, "not there", "en"))
    write_manifest(records, root / "manifest.jsonl")
    torch.manual_seed(0)
    HoliTok(get_preset_config("tiny")).save_pretrained(root / "tokenizer")
    SemanticModule(SemanticConfig(input_dim=16, hidden_size=32, num_layers=1, num_heads=4,
                                  ffn_hidden_size=64)).save_pretrained(root / "semantic")
    return root


def args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--manifest", str(corpus / "manifest.jsonl"), "--tokenizer", str(corpus / "tokenizer"), "--out", str(out),
            "--shard_size", "3", "--no_progress", *extra]


def store_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("shard-*"))}


@pytest.mark.slow
def test_one_pass_matches_direct_encoding_and_reports_bad_audio(corpus, tmp_path, capsys):
    from holitok import HoliTok
    from holitok.audio import load_audio

    out = tmp_path / "store"
    extract_main(args(corpus, out))
    assert "audio hours per process-minute" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["num_items"] == 6 and index["num_shards"] == 3 and index["latent_dim"] == 16
    assert sum(index["shard_items"]) == 6 and len(index["shard_items"]) == 3
    assert {s["id"]: s["reason"].split(":")[0] for s in index["skipped"]} == {"silent-1": "silent",
                                                                            "missing-1": "missing"}
    store = LatentStore(out)
    tokenizer = HoliTok.from_pretrained(corpus / "tokenizer", device="cpu")
    records = {r.id: r for r in read_manifest(corpus / "manifest.jsonl")}
    for i in (0, 5):
        item = store.load(i)
        expected = tokenizer.encode(load_audio(records[item["id"]].audio))[0].transpose(0, 1)
        assert item["text"] == records[item["id"]].text
        assert torch.allclose(item["latents"], expected, atol=1e-5)
        assert item["latents"].shape[0] == -(-int(records[item["id"]].duration * 48000 + 0.5) // 1920)


@pytest.mark.slow
def test_interrupted_and_restarted_on_two_processes_equals_one_pass(corpus, tmp_path):
    one_pass = tmp_path / "one_pass"
    extract_main(args(corpus, one_pass))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    broken = tmp_path / "broken"
    proc = subprocess.Popen([sys.executable, "-m", "data_prep.extract_latents", *args(corpus, broken)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (broken / "shard-00000.json").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # whatever the kill left behind, make it a mid-run state: no index, a torn temporary file, a shard missing
    (broken / "index.json").unlink(missing_ok=True)
    (broken / "shard-00002.json").unlink(missing_ok=True)
    (broken / "shard-00002.safetensors.partial").write_bytes(b"torn write")
    assert (broken / "shard-00000.json").exists() and not (broken / "index.json").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    restarted = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines",
         "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m",
         "data_prep.extract_latents", *args(corpus, broken)], cwd=ROOT, env={**env, "ACCELERATE_USE_CPU": "1"},
        capture_output=True, text=True, timeout=300)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert store_files(broken) == store_files(one_pass)  # also: no torn file left behind
    assert json.loads((broken / "index.json").read_text()) == json.loads((one_pass / "index.json").read_text())


@pytest.mark.slow
def test_semantic_features_and_settings_guard(corpus, tmp_path):
    from holitok import SemanticModule

    out = tmp_path / "unite"
    extract_main(args(corpus, out, "--semantic", str(corpus / "semantic")))
    store = LatentStore(out)
    assert store.semantic_dim == 32
    item = store.load(1, with_semantic=True)
    semantic = SemanticModule.from_pretrained(corpus / "semantic").eval()
    with torch.no_grad():
        expected = semantic(item["latents"][None])[0]
    assert torch.allclose(item["semantic"], expected, atol=1e-5)
    tensors = load_file(str(out / "shard-00000.safetensors"))
    assert tensors["semantic"].shape[0] == tensors["latents"].shape[0]
    with pytest.raises(SystemExit, match="different settings"):
        extract_main(args(corpus, out, "--max_seconds", "5"))


@pytest.mark.slow
def test_half_precision_store_round_trips_within_its_stated_bound(corpus, tmp_path):
    """--dtype float16 / bfloat16: the shards hold half-size tensors, the store reads float32 within the bounds written
    in holitok_slm/train/latent_store.py, and the settings guard treats the dtype like any other setting."""
    full, half, brain = tmp_path / "f32", tmp_path / "f16", tmp_path / "bf16"
    extract_main(args(corpus, full))
    extract_main(args(corpus, half, "--dtype", "float16"))
    extract_main(args(corpus, brain, "--dtype", "bfloat16"))
    assert json.loads((half / "index.json").read_text())["dtype"] == "float16"
    assert load_file(str(half / "shard-00000.safetensors"))["latents"].dtype == torch.float16
    size = lambda p: sum(f.stat().st_size for f in p.glob("shard-*.safetensors"))
    assert size(half) < 0.6 * size(full)
    exact, halved, bf = LatentStore(full), LatentStore(half), LatentStore(brain)
    for i in range(len(exact)):
        x, y, z = exact.load(i)["latents"], halved.load(i)["latents"], bf.load(i)["latents"]
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert ((y - x).abs() <= x.abs() * 2.0 ** -11 + 3e-8).all()
        assert ((z - x).abs() <= x.abs() * 2.0 ** -8 + 1e-30).all()
        assert not torch.equal(y, x)  # really stored at half precision
    with pytest.raises(SystemExit, match="dtype"):
        extract_main(args(corpus, half))  # finishing a float16 store as float32 is refused


@pytest.mark.slow
def test_speed_perturbed_store_encodes_the_resampled_audio_with_a_fixed_factor_per_item(corpus, tmp_path):
    """--speed_range: every item is encoded from its audio played faster by a factor in the range that depends on its
    id and the seed only (two shardings give the same store), the item records that factor and its new duration,
    and the settings guard covers the range."""
    from holitok import HoliTok
    from holitok.audio import load_audio, resample

    from data_prep.extract_latents import item_speed

    plain, fast, resharded = tmp_path / "plain", tmp_path / "fast", tmp_path / "resharded"
    extract_main(args(corpus, plain))
    extract_main(args(corpus, fast, "--speed_range", "0.8", "1.2", "--speed_seed", "3"))
    extract_main(args(corpus, resharded, "--speed_range", "0.8", "1.2", "--speed_seed", "3", "--shard_size", "4"))
    before, after, other = LatentStore(plain), LatentStore(fast), LatentStore(resharded)
    assert len(after) == len(before) == len(other) == 6
    tokenizer = HoliTok.from_pretrained(corpus / "tokenizer", device="cpu")
    records = {r.id: r for r in read_manifest(corpus / "manifest.jsonl")}
    meta = [item for shard in sorted(fast.glob("shard-*.json")) for item in json.loads(shard.read_text())["items"]]
    factors = [item["speed"] for item in meta]
    assert all(0.8 <= f <= 1.2 for f in factors) and len(set(factors)) == len(factors)  # drawn per item
    assert factors == [item_speed(item["id"], [0.8, 1.2], 3) for item in meta]
    assert factors != [item_speed(item["id"], [0.8, 1.2], 4) for item in meta]  # the seed matters
    by_id = {other.load(i)["id"]: other.load(i)["latents"] for i in range(len(other))}
    for i, item in enumerate(meta):
        z = after.load(i)["latents"]
        assert torch.equal(z, by_id[item["id"]])  # same item, same factor, whatever the sharding
        assert abs(item["duration"] * item["speed"] - records[item["id"]].duration) < 2e-3
        assert abs(z.shape[0] - before.load(i)["latents"].shape[0] / item["speed"]) <= 1.5
    audio = load_audio(records[meta[0]["id"]].audio)
    faster = torch.from_numpy(resample(audio.numpy(), round(48000 * factors[0]), 48000))
    expected = tokenizer.encode(faster)[0].transpose(0, 1)
    assert torch.allclose(after.load(0)["latents"], expected, atol=1e-5)
    with pytest.raises(SystemExit, match="speed_range"):
        extract_main(args(corpus, fast, "--speed_range", "0.9", "1.1", "--speed_seed", "3"))
    with pytest.raises(SystemExit):
        extract_main(args(corpus, tmp_path / "bad", "--speed_range", "1.2", "0.8"))


def test_channel_change_band_limits_and_adds_noise_at_the_drawn_snr():
    """change_channel: nothing above the bandwidth survives, the noise sits at the SNR asked for, the length is kept,
    and the draw per item depends on its id and the seed only."""
    from data_prep.extract_latents import change_channel, item_channel

    t = np.arange(48000) / 48000
    wav = torch.from_numpy((0.3 * np.sin(2 * np.pi * 1000 * t) + 0.3 * np.sin(2 * np.pi * 9000 * t)).astype(np.float32))
    narrow = change_channel(wav, 4.0, None, 0).numpy()
    spectrum = np.abs(np.fft.rfft(narrow))
    assert len(narrow) == len(wav) and spectrum[9000] < 1e-3 * spectrum[1000]  # 9 kHz gone, 1 kHz kept
    assert np.array_equal(change_channel(wav, 24.0, None, 0).numpy(), wav.numpy())  # the whole band: untouched
    noisy = change_channel(wav, None, 20.0, 7).numpy()
    noise = noisy - wav.numpy()
    snr = 10 * np.log10(np.mean(wav.numpy().astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert abs(snr - 20.0) < 0.2 and np.array_equal(noisy, change_channel(wav, None, 20.0, 7).numpy())
    draws = [item_channel(f"utt-{i}", [4, 8, 24], [15, 40], 3) for i in range(60)]
    assert {d[0] for d in draws} == {4, 8, 24} and all(15 <= d[1] <= 40 for d in draws)
    assert draws == [item_channel(f"utt-{i}", [4, 8, 24], [15, 40], 3) for i in range(60)]
    assert draws != [item_channel(f"utt-{i}", [4, 8, 24], [15, 40], 4) for i in range(60)]
    assert item_channel("utt-0", None, None, 3)[:2] == (None, None)


@pytest.mark.slow
def test_channel_perturbed_store_records_each_item_s_channel(corpus, tmp_path):
    """--bandwidths_khz / --snr_db: the store encodes the changed audio and records each item's draw; the settings
    guard covers them."""
    from holitok import HoliTok
    from holitok.audio import load_audio

    from data_prep.extract_latents import change_channel, item_channel

    out = tmp_path / "channel"
    extract_main(args(corpus, out, "--bandwidths_khz", "4", "8", "--snr_db", "20", "30", "--speed_seed", "5"))
    meta = [item for shard in sorted(out.glob("shard-*.json")) for item in json.loads(shard.read_text())["items"]]
    assert all(item["bandwidth_khz"] in (4, 8) and 20 <= item["snr_db"] <= 30 for item in meta)
    records = {r.id: r for r in read_manifest(corpus / "manifest.jsonl")}
    audio = change_channel(load_audio(records[meta[0]["id"]].audio), *item_channel(meta[0]["id"], [4, 8], [20, 30], 5))
    expected = HoliTok.from_pretrained(corpus / "tokenizer", device="cpu").encode(audio)[0].transpose(0, 1)
    assert torch.allclose(LatentStore(out).load(0)["latents"], expected, atol=1e-5)
    with pytest.raises(SystemExit, match="bandwidths_khz"):
        extract_main(args(corpus, out, "--bandwidths_khz", "4", "--snr_db", "20", "30", "--speed_seed", "5"))
    with pytest.raises(SystemExit):
        extract_main(args(corpus, tmp_path / "bad", "--bandwidths_khz", "40"))
