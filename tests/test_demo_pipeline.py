"""The one-command demo pipeline: smoke preset end to end, skip/resume, refusing mixed presets, presets that validate,
and the app's handler functions on the model the pipeline trained (audio of plausible length, text, clear errors)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from demo.config import PRESET_DIR, REPO_ROOT, load_pipeline_config
from demo.pipeline import STEPS, DemoPipeline, PipelineError
from demo.smoke import smoke_command, smoke_outputs


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return smoke_outputs(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def service(smoke):
    from demo.app import DemoService

    return DemoService.from_dirs(smoke.model, smoke.tokenizer)


def _train_texts(smoke) -> list[str]:
    return [json.loads(line)["text"] for line in (smoke.corpus / "train.jsonl").read_text().splitlines()]


def _prompt(smoke) -> tuple[str, str]:
    record = json.loads((smoke.corpus / "train.jsonl").read_text().splitlines()[0])
    return str(smoke.corpus / record["audio"]), record["text"]


@pytest.mark.slow
def test_smoke_pipeline_runs_every_step_and_exports_loadable_models(smoke):
    from holitok import HoliTok
    from holitok_slm import UnifiedModel

    for index, step in enumerate(STEPS, 1):
        assert f"[{index}/{len(STEPS)}] {step} ..." in smoke.log
        assert f"[{index}/{len(STEPS)}] {step}: done in" in smoke.log
    assert "timings: corpus" in smoke.log
    assert "tokenizer check (python -m eval.reconstruction): 3/3 utterances scored" in smoke.log
    state = json.loads((smoke.out / "pipeline_state.json").read_text())
    assert [s for s in STEPS if state["steps"][s]["done"] and state["steps"][s]["preset"] == "smoke"] == list(STEPS)
    codec = HoliTok.from_pretrained(smoke.tokenizer, device="cpu")
    assert codec.latent_dim == 16
    index = json.loads((smoke.out / "latents" / "train" / "index.json").read_text())
    assert index["num_items"] == len(_train_texts(smoke)) == 12
    model = UnifiedModel.from_pretrained(smoke.model)
    assert model.config.latent_dim == codec.latent_dim
    # the unified run trained the number of steps the preset asked for
    metrics = (smoke.out / "unified" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == load_pipeline_config("smoke").unified.set["train.max_steps"]


@pytest.mark.slow
def test_rerun_skips_every_finished_step(smoke):
    result = subprocess.run(smoke_command(smoke.out), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for step in STEPS:
        assert f"{step}: already done" in result.stdout
    assert "$ " not in result.stdout  # no step command was started


@pytest.mark.slow
def test_other_settings_in_the_same_folder_are_refused(smoke):
    pipeline = DemoPipeline(load_pipeline_config("tiny"), smoke.out, "tiny", log=lambda line: None)
    with pytest.raises(PipelineError, match="other settings.*--out"):
        pipeline.run()


def test_editing_a_stage_yaml_invalidates_its_step_and_the_later_ones(tmp_path):
    """A finished tokenizer step must not be reused after its stage YAML changed (the preset file did not)."""
    config = load_pipeline_config("smoke")
    stage = config.tokenizer.stages[0]
    copy = tmp_path / "stage.yaml"
    copy.write_text((REPO_ROOT / stage.config).read_text())
    stage.config = str(copy)
    pipeline = DemoPipeline(config, tmp_path / "out", "smoke", log=lambda line: None)
    before = pipeline.fingerprints()
    assert before == pipeline.fingerprints()  # stable
    copy.write_text(copy.read_text() + "\nseed: 12345\n")
    after = pipeline.fingerprints()
    assert after["corpus"] == before["corpus"]
    assert all(after[step] != before[step] for step in STEPS[1:])


def test_asr_speed_store_and_vocabulary_reach_the_commands_and_configs_and_leave_old_fingerprints_alone(tmp_path):
    """latents.asr_speed_range adds a speed-perturbed extraction and an ASR-only dataset; corpus.vocabulary reaches
    synth_corpus. Unset, neither enters a fingerprint, so runs fingerprinted before they existed stay valid."""
    from holitok_slm.train.config import load_training_run

    plain = DemoPipeline(load_pipeline_config("smoke"), tmp_path / "a", "smoke", log=lambda line: None)
    assert "asr_speed_range" not in plain.config.section("latents") and "vocabulary" not in plain.config.section("corpus")
    config = load_pipeline_config("smoke")
    config.latents.asr_speed_range, config.corpus.vocabulary = [0.9, 1.1], "large"
    pipeline = DemoPipeline(config, tmp_path / "b", "smoke", log=lambda line: None)
    assert pipeline.fingerprints()["corpus"] != plain.fingerprints()["corpus"]
    config.corpus.vocabulary = None
    prints = pipeline.fingerprints()
    assert prints["corpus"] == plain.fingerprints()["corpus"] and prints["latents"] != plain.fingerprints()["latents"]
    commands = []
    pipeline._run = lambda cmd, what: commands.append([str(c) for c in cmd])
    pipeline.step_latents()
    assert len(commands) == 2 and "--speed_range" not in commands[0]
    assert commands[1][commands[1].index("--speed_range"):][:3] == ["--speed_range", "0.9", "1.1"]
    assert commands[1][commands[1].index("--out") + 1] == str(pipeline.speed_latents_dir)
    pipeline.tokenizer_stage_configs()
    datasets = load_training_run(pipeline.unified_config()).data.datasets
    assert [(d.latents, d.tasks) for d in datasets] == [(str(pipeline.latents_dir), ["tts", "asr"]),
                                                        (str(pipeline.speed_latents_dir), ["asr"])]
    config.corpus.vocabulary = "large"
    pipeline.step_corpus()
    assert commands[-1][commands[-1].index("--vocabulary") + 1] == "large"


def test_second_corpus_is_rendered_extracted_aligned_and_trained_on_beside_the_first(tmp_path):
    """corpus.second_vocabulary renders a second corpus, extracts and force-aligns its store and adds it as a TTS+ASR
    dataset; unset, it leaves fingerprints alone; a vocabulary that does not exist or repeats the first is refused."""
    from safetensors.torch import save_file

    from holitok_slm.train.config import load_training_run

    plain = DemoPipeline(load_pipeline_config("smoke"), tmp_path / "a", "smoke", log=lambda line: None)
    assert "second_vocabulary" not in plain.config.section("corpus") and plain.second_corpus_dir is None
    config = load_pipeline_config("smoke")
    config.corpus.second_vocabulary = "large"
    config.refine.set = {"train.max_steps": 2}
    pipeline = DemoPipeline(config, tmp_path / "b", "smoke", log=lambda line: None)
    assert pipeline.fingerprints()["corpus"] != plain.fingerprints()["corpus"]
    commands = []
    pipeline._run = lambda cmd, what: commands.append([str(c) for c in cmd])
    pipeline.step_corpus()
    first, second = commands
    assert "--vocabulary" not in first and first[first.index("--out") + 1] == str(pipeline.corpus_dir)
    assert second[second.index("--out") + 1] == str(tmp_path / "b" / "corpus_large")
    assert second[second.index("--vocabulary") + 1] == "large"
    assert first[:first.index("--out")] == second[:second.index("--out")]
    commands.clear()
    pipeline.step_latents()
    assert [c[c.index("--manifest") + 1] for c in commands] == [str(pipeline.corpus_dir / "train.jsonl"),
                                                              str(pipeline.second_corpus_dir / "train.jsonl")]
    assert commands[1][commands[1].index("--out") + 1] == str(pipeline.second_latents_dir)
    pipeline.tokenizer_stage_configs()
    datasets = load_training_run(pipeline.unified_config()).data.datasets
    assert [(d.latents, d.tasks) for d in datasets] == [(str(pipeline.latents_dir), ["tts", "asr"]),
                                                        (str(pipeline.second_latents_dir), ["tts", "asr"])]
    (pipeline.unified_dir / "final").mkdir(parents=True)
    save_file({"backbone.weight": torch.zeros(1)}, str(pipeline.unified_dir / "final" / "model.safetensors"))
    commands.clear()
    pipeline.step_refine()
    aligned = [c[c.index("--latents") + 1] for c in commands if "data_prep.align_latents" in c]
    assert aligned == [str(pipeline.latents_dir), str(pipeline.second_latents_dir)]
    refine = load_training_run(pipeline.refine_config())
    assert [d.latents for d in refine.data.datasets][1] == str(pipeline.second_latents_dir)
    for bad, message in (("huge", "is not one of"), ("base", "repeats")):
        path = tmp_path / f"{bad}.yaml"
        path.write_text(f"inherit: {PRESET_DIR / 'smoke.yaml'}\ncorpus: {{second_vocabulary: {bad}}}\n")
        with pytest.raises(ValueError, match=message):
            load_pipeline_config(str(path))


def test_channel_store_is_made_from_the_second_corpus_with_the_speed_change_and_read_by_asr_only(tmp_path):
    """latents.asr_channel_*: one more extraction (the second corpus' audio, speed range and seed + 1, the channel
    options) and an ASR-only dataset; unset, fingerprints stay; without a second corpus it is made from the first."""
    from holitok_slm.train.config import load_training_run

    plain = DemoPipeline(load_pipeline_config("smoke"), tmp_path / "a", "smoke", log=lambda line: None)
    assert "asr_channel_bandwidths_khz" not in plain.config.section("latents") and plain.channel_latents_dir is None
    config = load_pipeline_config("smoke")
    config.corpus.second_vocabulary, config.latents.asr_speed_range = "large", [0.9, 1.1]
    config.latents.asr_channel_bandwidths_khz, config.latents.asr_channel_snr_db = [4.0, 24.0], [15.0, 40.0]
    pipeline = DemoPipeline(config, tmp_path / "b", "smoke", log=lambda line: None)
    commands = []
    pipeline._run = lambda cmd, what: commands.append([str(c) for c in cmd])
    pipeline.step_latents()
    assert len(commands) == 4
    channel, = [c for c in commands if c[c.index("--out") + 1] == str(pipeline.channel_latents_dir)]
    assert channel[channel.index("--manifest") + 1] == str(pipeline.second_corpus_dir / "train.jsonl")
    assert channel[channel.index("--speed_seed") + 1] == str(config.latents.asr_speed_seed + 1)
    assert channel[channel.index("--speed_range"):][:3] == ["--speed_range", "0.9", "1.1"]
    assert channel[channel.index("--bandwidths_khz"):][:3] == ["--bandwidths_khz", "4.0", "24.0"]
    assert channel[channel.index("--snr_db"):][:3] == ["--snr_db", "15.0", "40.0"]
    pipeline.tokenizer_stage_configs()
    datasets = load_training_run(pipeline.unified_config()).data.datasets
    assert [(d.latents, d.tasks) for d in datasets][-1] == (str(pipeline.channel_latents_dir), ["asr"])
    config.corpus.second_vocabulary, config.latents.asr_speed_range = None, None
    commands.clear()
    pipeline.step_latents()
    assert len(commands) == 2 and commands[1][commands[1].index("--out") + 1] == str(pipeline.channel_latents_dir)
    assert commands[1][commands[1].index("--manifest") + 1] == str(pipeline.corpus_dir / "train.jsonl")
    assert "--speed_range" not in commands[1]


@pytest.mark.slow
def test_shipped_preset_data_settings_run_end_to_end_at_smoke_size(tmp_path):
    """The shipped preset's data path (a second corpus, speed and channel copies, both corpora force-aligned, a
    forced-pointer refine reading all four stores) on the smoke sizes: every command runs and the model loads."""
    from holitok_slm.model.unified import UnifiedModel

    shipped = load_pipeline_config("chars256_large")
    preset = tmp_path / "smoke_large.yaml"
    preset.write_text(
        f"inherit: {PRESET_DIR / 'smoke.yaml'}\n"
        f"corpus: {{second_vocabulary: {shipped.corpus.second_vocabulary}}}\n"
        "latents: {asr_speed_range: [0.9, 1.1], asr_channel_bandwidths_khz: [4, 24], asr_channel_snr_db: [20, 30]}\n"
        "refine: {aligner_steps: 5, aligner_held_out: 2, set: {train.max_steps: 4, train.save_every: 2, "
        "model.text_pointer: true, model.text_pointer_alignment: forced, model.frame_pointer: true, "
        "data.tts_prompt_share: 0.5}}\n")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "demo.pipeline", "--preset", str(preset), "--no-launch",
                             "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for store in ("train", "train_speed", "train_large", "train_channel"):
        assert (out / "latents" / store / "index.json").is_file()
    assert (out / "latents" / "train" / "points").is_dir() and (out / "latents" / "train_large" / "points").is_dir()
    refine = yaml.safe_load((out / "configs" / "train_refine.yaml").read_text())
    assert [d["name"] for d in refine["data"]["datasets"]] == ["synth", "synth_large", "synth_speed", "synth_channel"]
    model = UnifiedModel.from_pretrained(out / "refine" / "final")
    assert model.config.text_pointer and model.config.frame_pointer


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_writes_configs_the_trainers_accept(preset, tmp_path):
    """Catches a typo in default.yaml/tiny.yaml without spending an hour running them."""
    from holitok.train.config import load_config
    from holitok_slm.train.config import load_training_run

    pipeline = DemoPipeline(load_pipeline_config(preset), tmp_path, preset, log=lambda line: None)
    stage_paths = pipeline.tokenizer_stage_configs()
    stages = [load_config(path) for path in stage_paths]
    # stages run in order; a decoder-only fine-tune (a stage-2 config, latents unchanged) may follow any of them
    ordered = [s.stage for s in stages if not s.stage_options.decoder_only]
    assert ordered == sorted(ordered) and stages[0].stage == 1
    for previous, stage in zip(stages, stages[1:]):
        assert stage.init_from == previous.output_dir
    assert all(s.data.train == str(tmp_path.resolve() / "corpus" / "train.jsonl") for s in stages)
    run = load_training_run(pipeline.unified_config())
    assert run.data.datasets[0].latents == str(pipeline.latents_dir)
    assert run.train.output_dir == str(pipeline.unified_dir)
    tokenizer = stages[-1].model.build()  # the tokenizer's width (learnt + pitch channels), whatever the YAML said
    assert run.model.latent_dim == tokenizer.latent_dim + tokenizer.pitch_channels
    if pipeline.config.refine.enabled:  # continues step 4's model: needs its weights to list what it copies
        from holitok_slm import UnifiedModel
        from holitok_slm.text_tokenizer import train_sentencepiece

        run.model.text_tokenizer.path = str(tmp_path / "spm.model")
        train_sentencepiece(["the cat sat on the mat", "a dog ran in the park"] * 20, run.model.text_tokenizer.path,
                            vocab_size=run.model.text_tokenizer.sentencepiece_vocab_size)
        first = UnifiedModel.from_config(run.model)
        first.save_pretrained(pipeline.unified_dir / "final")
        refine = load_training_run(pipeline.refine_config())
        assert refine.train.output_dir == str(pipeline.refine_dir) and pipeline.model_dir == pipeline.refine_dir / "final"
        assert refine.train.init_dit_from == str(pipeline.unified_dir / "final")
        assert {p.split(".")[0] for p in refine.train.init_dit_prefixes} == {k.split(".")[0] for k in first.state_dict()}
        assert refine.model.text_tokenizer.path == str(pipeline.unified_dir / "final" / "text_tokenizer" / "spm.model")
        for key, value in pipeline.config.refine.set.items():
            node = refine
            for part in key.split("."):
                node = getattr(node, part)
            assert node == value, key
    else:
        assert pipeline.model_dir == pipeline.unified_dir / "final"


@pytest.mark.slow
def test_a_refine_stage_aligns_the_store_and_continues_the_model_with_a_forced_pointer(smoke, tmp_path):
    """Step 5 on a copy of the smoke run: aligner, forced alignment, the continued run; the demo then serves it."""
    import shutil

    from demo.app import DemoService
    from demo.config import RefineSettings
    from holitok_slm import UnifiedModel

    out = tmp_path / "refined"
    shutil.copytree(smoke.out, out, ignore=shutil.ignore_patterns("report", "checkpoints"))
    state = json.loads((out / "pipeline_state.json").read_text())
    del state["steps"]["refine"], state["steps"]["report"]  # built by a preset without a refine stage
    (out / "pipeline_state.json").write_text(json.dumps(state))
    config = load_pipeline_config("smoke")
    config.refine = RefineSettings(aligner_steps=3, aligner_held_out=4, set={
        "train.max_steps": 4, "train.save_every": 2, "model.text_pointer": True,
        "model.text_pointer_alignment": "forced", "model.flow.history_dropout": 1.0,
        "model.flow.blind_history_share": 1.0, "model.generation.blind_history": True,
        "train.export_dtype": "float16"})
    lines = []
    pipeline = DemoPipeline(config, out, "smoke", log=lines.append)
    pipeline.run()
    log = "\n".join(lines)
    assert "unified: already done" in log and "[5/6] refine: done in" in log
    assert "data_prep.train_aligner" in log and "data_prep.align_latents" in log
    assert (out / "latents" / "train" / "points" / "index.json").is_file()
    model = UnifiedModel.from_pretrained(pipeline.model_dir)
    assert pipeline.model_dir == out / "refine" / "final"
    assert model.forced_pointer and not model.flow_reads_history and model.aligner is not None
    from safetensors.torch import load_file

    for weights in (pipeline.model_dir / "model.safetensors", pipeline.model_dir / "aligner" / "model.safetensors"):
        assert {t.dtype for t in load_file(str(weights)).values() if t.is_floating_point()} == {torch.float16}
    first = UnifiedModel.from_pretrained(out / "unified" / "final")
    metrics = (out / "refine" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(metrics[-1])["step"] == 4 and "pace_loss" in json.loads(metrics[-1])
    # trained on from step 4's weights: moved a little from them, far less than a fresh model is from them
    fresh = UnifiedModel.from_config(model.config)
    before, after, other = (torch.cat([p.flatten() for p in m.backbone.parameters()]) for m in (first, model, fresh))
    assert 0 < (after - before).abs().mean() < 0.1 * (other - before).abs().mean()
    service = DemoService.from_dirs(pipeline.model_dir, pipeline.tokenizer_dir)
    prompt_wav, prompt_text = _prompt(smoke)
    rate, wav = service.clone_voice(prompt_wav, prompt_text, _train_texts(smoke)[1], steps=2, seed=0)
    assert rate == 48000 and wav.size > 0 and np.isfinite(wav).all()


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(FileNotFoundError, match="available: .*default.*smoke.*tiny"):
        load_pipeline_config("huge")


@pytest.mark.slow
def test_clone_voice_returns_audio_of_plausible_length(smoke, service):
    prompt_wav, prompt_text = _prompt(smoke)
    target = _train_texts(smoke)[1]
    rate, wav = service.clone_voice(prompt_wav, prompt_text, target, steps=2, cfg_strength=2.0, temperature=1.0,
                                    seed=0)
    assert rate == 48000 and wav.dtype == np.float32 and np.isfinite(wav).all()
    patch_samples = service.pipeline.model.config.patch_size * service.pipeline.codec.hop_size
    assert wav.size > 0 and wav.size % patch_samples == 0  # whole generated patches, prompt context cut off
    # Length bounds follow the prompt's speaking rate: at most 2.5x the expected length plus 4 patches.
    prompt_seconds = sf.info(prompt_wav).duration
    expected = prompt_seconds * len(target) / len(prompt_text)
    assert wav.size / rate <= 2.5 * expected * 1.5 + 4 * patch_samples / rate
    # sampling controls reach the sampler: same seed -> same audio, another seed or step count -> different audio
    again = service.clone_voice(prompt_wav, prompt_text, target, steps=2, cfg_strength=2.0, temperature=1.0, seed=0)
    assert np.array_equal(again[1], wav)
    other = service.clone_voice(prompt_wav, prompt_text, target, steps=2, cfg_strength=2.0, temperature=1.0, seed=1)
    assert other[1].shape != wav.shape or not np.allclose(other[1], wav)


@pytest.mark.slow
def test_transcribe_returns_text_for_any_rate_and_channels(smoke, service):
    prompt_wav, _ = _prompt(smoke)
    text = service.transcribe(prompt_wav)
    assert isinstance(text, str)
    audio, rate = sf.read(prompt_wav, dtype="int16")
    # the same speech as a 16 kHz stereo int16 array (what a browser upload may give) is accepted
    import soxr

    mono16 = soxr.resample(audio.astype(np.float32) / 32768, rate, 16000)
    stereo = (np.stack([mono16, mono16], axis=1) * 32767).astype(np.int16)
    assert isinstance(service.transcribe((16000, stereo)), str)


@pytest.mark.slow
@pytest.mark.parametrize("make_audio, message", [
    (lambda: None, "upload or record"),
    (lambda: (48000, np.zeros(0, np.int16)), "empty"),
    (lambda: (48000, np.zeros(48000, np.float32)), "silent"),
    (lambda: (48000, np.full(48000, np.nan, np.float32)), "NaN"),
    (lambda: (48000, 0.5 * np.sin(np.arange(2000) / 5).astype(np.float32)), "too short"),
    (lambda: (8000, (0.3 * np.sin(np.arange(8000 * 31) / 3)).astype(np.float32)), "limit is 30 s"),
])
def test_bad_audio_gets_a_clear_message(service, make_audio, message):
    from demo.app import DemoInputError

    with pytest.raises(DemoInputError, match=message):
        service.transcribe(make_audio())


@pytest.mark.slow
def test_bad_text_gets_a_clear_message(smoke, service):
    from demo.app import DemoInputError

    prompt_wav, prompt_text = _prompt(smoke)
    with pytest.raises(DemoInputError, match="enter the text to speak"):
        service.clone_voice(prompt_wav, prompt_text, "   ")
    with pytest.raises(DemoInputError, match="not trained on: .*'☃'"):
        service.clone_voice(prompt_wav, prompt_text, "a snowman ☃ here")
    with pytest.raises(DemoInputError, match="characters; the limit is"):
        service.clone_voice(prompt_wav, prompt_text, "the " * 200)
    with pytest.raises(DemoInputError, match="at least 1"):
        service.clone_voice(prompt_wav, prompt_text, _train_texts(smoke)[0], steps=0)


@pytest.mark.slow
def test_examples_only_use_characters_the_model_knows(smoke):
    from demo.app import unknown_characters
    from holitok_slm.text_tokenizer import TextTokenizer

    pipeline = DemoPipeline(load_pipeline_config("smoke"), smoke.out, "smoke", log=lambda line: None)
    examples = pipeline.write_examples(per_voice=math.inf)
    tokenizer = TextTokenizer.load(smoke.model / "text_tokenizer")
    for example in examples:
        assert not unknown_characters(tokenizer, example["prompt_text"] + example["target_text"])
    # the training sentences are, by construction, all known
    assert not unknown_characters(tokenizer, " ".join(_train_texts(smoke)))
    assert unknown_characters(tokenizer, _train_texts(smoke)[0] + " ï ☃ ï") == ["ï", "☃"]
