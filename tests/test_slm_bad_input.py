"""Bad-input battery of the unified model's public entry points on a tiny model: the Python API (SpeechPipeline), the
`holitok-slm` CLI (tts/asr; the cases tests/test_slm_cli.py already covers are not repeated here) and the demo's
handlers (DemoService and the Gradio wrapper). Every case gives either a correct result or a clear refusal: a
ValueError naming the problem in Python, exit status 2 with one `error:` line from the CLI, a message for the user in
the demo; never a traceback or an error from deep inside torch."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import speech_like
from holitok_slm.cli import main as cli

FAST = {"min_patches": 1, "max_patches": 2, "steps": 2}  # one or two 160 ms patches, 2 Euler steps
CLI_FAST = ["--max-seconds", "0.3", "--steps", "2"]


@pytest.fixture(scope="module")
def pipeline(tiny_slm):
    from holitok_slm.infer.pipeline import SpeechPipeline

    return SpeechPipeline.from_pretrained(tiny_slm.model_dir, tiny_slm.tokenizer_dir)


@pytest.fixture(scope="module")
def service(pipeline):
    from demo.app import DemoService

    return DemoService(pipeline)


# ---- audio ---------------------------------------------------------------------------------------------------------
def _write_audio(case: str, folder: Path) -> str:
    """The audio file of one case."""
    path = folder / f"{case}.wav"
    if case == "empty":
        sf.write(path, np.zeros(0, np.float32), 48000)
    elif case == "silent":
        sf.write(path, np.zeros(48000, np.float32), 48000)
    elif case == "nan":
        samples = 0.1 * np.sin(np.arange(48000) / 7).astype(np.float32)
        samples[1000:1100] = np.nan
        sf.write(path, samples, 48000, subtype="FLOAT")
    elif case == "stereo_44k":
        speech_like(path, sr=44100, seconds=1.0, channels=2)
    elif case == "mono_8k":
        speech_like(path, sr=8000, seconds=1.0)
    elif case == "mono_16k":
        speech_like(path, sr=16000, seconds=0.8)
    elif case == "ten_minutes":  # 10 min at 8 kHz, 16-bit: 9.6 MB; the refusal must come from the header
        t = np.arange(8000 * 600) / 8000
        sf.write(path, (0.2 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 8000, subtype="PCM_16")
    elif case == "corrupt":
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is no audio")
    elif case == "too_short":  # 50 ms: shorter than one 160 ms patch
        speech_like(path, sr=48000, seconds=0.05)
    else:
        raise AssertionError(case)
    return str(path)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_audio")
    cache: dict[str, str] = {}

    def get(case: str) -> str:
        if case not in cache:
            cache[case] = _write_audio(case, folder)
        return cache[case]
    return get


OK = None
# case -> expected text of the refusal per entry point (OK: a correct result). API: SpeechPipeline.asr and .tts with
# the file as voice prompt; demo: DemoService.transcribe / clone_voice; cli: holitok-slm asr / tts --prompt-audio.
# The API takes silent audio and sub-patch audio to transcribe (valid input for a model); people (demo, CLI) are
# asked for speech. The API accepts up to 60 s (SpeechPipeline.max_audio_seconds), the demo and CLI 30 s.
AUDIO_CASES = {
    #              api_asr               api_tts              demo_asr / demo_clone / cli_asr / cli_tts
    "empty":       ("empty (0 samples)", "empty (0 samples)", "empty (0 samples)"),
    "silent":      (OK,                  OK,                  "is silent"),
    "nan":         ("NaN",               "NaN",               "NaN"),
    "stereo_44k":  (OK,                  OK,                  OK),
    "mono_8k":     (OK,                  OK,                  OK),
    "mono_16k":    (OK,                  OK,                  OK),
    "ten_minutes": ("600.0 s long; the limit is 60 s", "600.0 s long; the limit is 60 s", "the limit is 30 s"),
    "corrupt":     ("cannot read audio file", "cannot read audio file", "cannot read audio file"),
    "too_short":   (OK,                  "too short (50 ms)", "too short (50 ms)"),
}
# Already in tests/test_slm_cli.py (corrupt file to asr, silent prompt to tts): not repeated.
CLI_COVERED = {("asr", "corrupt"), ("tts", "silent")}


def _check_refusal(call, expected: str | None):
    """Runs `call`: a result when expected is None, else a ValueError whose one-line message contains `expected`,
    given before any heavy work (well under a second)."""
    start = time.perf_counter()
    if expected is None:
        return call()
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert expected in message and "\n" not in message, message
    assert time.perf_counter() - start < 2.0, "a refusal must come before the heavy work"
    return None


def _assert_waveform(wav) -> None:
    assert isinstance(wav, torch.Tensor) and wav.dim() == 1 and wav.numel() > 0 and torch.isfinite(wav).all()


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_api_audio(pipeline, audio, case):
    expected_asr, expected_tts, _ = AUDIO_CASES[case]
    path = audio(case)
    text = _check_refusal(lambda: pipeline.asr(path, max_new_tokens=4), expected_asr)
    if expected_asr is None:
        assert isinstance(text, str)
    wav = _check_refusal(lambda: pipeline.tts("hello world", prompt_audio=path, prompt_text="a dog ran", seed=0,
                                              **FAST), expected_tts)
    if expected_tts is None:
        _assert_waveform(wav)
        assert wav.numel() <= 2 * pipeline.patch_samples
    if expected_tts is not None:  # the prompt is checked before the model transcribes it, too
        _check_refusal(lambda: pipeline.tts("hello world", prompt_audio=path, **FAST), expected_tts)


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_demo_audio(service, audio, case):
    from demo.app import DemoInputError

    expected = AUDIO_CASES[case][2]
    path = audio(case)
    for call in (lambda: service.transcribe(path),
                 lambda: service.clone_voice(path, "a dog ran", "hello world", steps=2)):
        if expected is None:
            result = call()
            if isinstance(result, tuple):
                rate, wav = result
                assert rate == 48000 and wav.ndim == 1 and wav.size > 0 and np.isfinite(wav).all()
            else:
                assert isinstance(result, str)
        else:
            with pytest.raises(DemoInputError, match=re.escape(expected)):
                call()


def _cli_fails(argv: list[str], expected: str, capsys) -> str:
    assert cli(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"holitok-slm {argv[0]}: error: ") and expected in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command,case", [(command, case) for command in ("asr", "tts") for case in AUDIO_CASES
                                          if (command, case) not in CLI_COVERED])  # the rest: tests/test_slm_cli.py
def test_cli_audio(tiny_slm, audio, tmp_path, capsys, command, case):
    expected = AUDIO_CASES[case][2]
    path = audio(case)
    if command == "asr":
        argv = ["asr", *tiny_slm.flags, path, "--out", str(tmp_path / "t.jsonl")]
    else:
        argv = ["tts", *tiny_slm.flags, "--text", "hello world", "--prompt-audio", path, "--prompt-text", "a dog ran",
                *CLI_FAST, "--out", str(tmp_path / "out")]
    start = time.perf_counter()
    if expected is None:
        assert cli(argv) == 0, capsys.readouterr().err
        if command == "asr":
            [row] = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
            assert isinstance(row["text"], str)
        else:
            wav, rate = sf.read(tmp_path / "out" / "0001.wav")
            assert rate == 48000 and wav.ndim == 1 and np.isfinite(wav).all()
        return
    line = _cli_fails(argv, expected, capsys)
    if case == "ten_minutes":  # refused from the header, before the model is even loaded
        assert time.perf_counter() - start < 1.0 and "ten_minutes.wav is 600.0 s long" in line


@pytest.mark.parametrize("samples, rate, expected", [
    (np.zeros(0, np.float32), 48000, "empty"),
    (np.zeros((0, 2), np.int16), 48000, "empty"),
    (np.full(4800, np.nan, np.float32), 48000, "NaN"),
    (np.full(4800, np.inf, np.float32), 48000, "NaN or inf"),
    (0.1 * np.ones((3, 2, 4800), np.float32), 48000, "expected a mono or multi-channel 1-D signal"),
    (0.1 * np.ones(4800, np.float32), 0, "sample_rate must be a positive number"),
    (0.1 * np.ones(4800, np.float32), -16000, "sample_rate must be a positive number"),
    (np.array(["not", "audio"]), 48000, "numeric samples"),
    (np.zeros(8000 * 600, np.int16), 8000, "600.0 s long"),
    # correct results: stereo either way round, PCM integers, one sample, any rate
    (0.1 * np.sin(np.arange(2 * 16000) / 5).reshape(16000, 2).astype(np.float32), 16000, OK),
    (0.1 * np.sin(np.arange(2 * 16000) / 5).reshape(2, 16000).astype(np.float32), 16000, OK),
    ((3000 * np.sin(np.arange(44100) / 5)).astype(np.int16), 44100, OK),
    (np.full(1, 0.1, np.float32), 48000, OK),
    (0.1 * np.sin(np.arange(8000) / 3), 8000, OK),  # float64
])
def test_api_audio_arrays(pipeline, samples, rate, expected):
    text = _check_refusal(lambda: pipeline.asr(samples, sample_rate=rate, max_new_tokens=4), expected)
    if expected is None:
        assert isinstance(text, str)


@pytest.mark.parametrize("samples, rate, expected", [
    (None, 48000, "empty"),
    (np.zeros(0, np.int16), 48000, "empty"),
    ((0.1 * np.ones((48000, 2)) * 32767).astype(np.int16), 48000, OK),   # Gradio's stereo layout [L, C]
    ((3000 * np.sin(np.arange(8000) / 3)).astype(np.int16), 8000, OK),
    (np.full(48000, np.nan, np.float32), 48000, "NaN"),
    (np.zeros((16000 * 31, 2), np.int16), 16000, "the limit is 30 s"),
    (0.1 * np.ones(48000, np.float32), 0, "sample_rate must be a positive number"),
])
def test_demo_audio_tuples(service, samples, rate, expected):
    """What gr.Audio(type="numpy") sends, or a script calling DemoService: (rate, samples)."""
    from demo.app import DemoInputError

    if expected is None:
        assert isinstance(service.transcribe((rate, samples)), str)
    else:
        with pytest.raises(DemoInputError, match=re.escape(expected)):
            service.transcribe((rate, samples))


# ---- text and options ----------------------------------------------------------------------------------------------
LONG_TEXT = "the cat sat on the mat " * 400  # 9200 characters, 2400+ tokens: more than the tiny model's 2048 positions

TEXT_CASES = {
    #                     text                  API                        demo
    "empty":              ("",                  "text to speak (it is empty)", "enter the text to speak"),
    "blank":              ("  \n\t ",           "text to speak (it is empty)", "enter the text to speak"),
    "none":               (None,                "text to speak (it is empty)", "enter the text to speak"),
    "not_a_string":       (42,                  "must be a string, got int",   "must be a string, got int"),
    "unknown_characters": ("a snowman \u2603",  OK,                            "not trained on: '\u2603'"),
    "too_long":           (LONG_TEXT,           "positions but the model handles at most 2048",
                           "the limit is 400"),
}


@pytest.mark.parametrize("case", list(TEXT_CASES))
def test_text(pipeline, service, tiny_slm, case):
    from demo.app import DemoInputError

    text, expected_api, expected_demo = TEXT_CASES[case]
    wav = _check_refusal(lambda: pipeline.tts(text, prompt_audio=tiny_slm.prompt, prompt_text="a dog ran", **FAST),
                         expected_api)
    if expected_api is None:
        _assert_waveform(wav)  # byte-fallback pieces: speech, however odd; people are refused below
        assert pipeline.model.text_tokenizer.unknown_characters(text) == ["\u2603"]
    with pytest.raises(DemoInputError, match=expected_demo):
        service.clone_voice(tiny_slm.prompt, "a dog ran", text, steps=2)


def test_text_in_other_fields_and_lists(pipeline, service, tiny_slm, capsys, tmp_path):
    from demo.app import DemoInputError

    with pytest.raises(ValueError, match="prompt transcript must be a string"):
        pipeline.tts("hello world", prompt_audio=tiny_slm.prompt, prompt_text=3, **FAST)
    with pytest.raises(ValueError, match="instruction must be a string"):
        pipeline.tts("hello world", instruction=["slow"], **FAST)
    with pytest.raises(ValueError, match="texts must be a list .* got a single str"):
        pipeline.synthesize("hello world", **FAST)
    with pytest.raises(ValueError, match="same length"):
        pipeline.synthesize(["hello", "world"], prompt_audios=[tiny_slm.prompt], **FAST)
    assert pipeline.synthesize([]) == [] and pipeline.tts_batch([]) == [] and pipeline.asr([]) == []
    with pytest.raises(DemoInputError, match="prompt transcript contains characters this model was not trained on"):
        service.clone_voice(tiny_slm.prompt, "snow \u2603", "hello world", steps=2)
    _cli_fails(["tts", *tiny_slm.flags, "--text", "hello world", "--prompt-audio", tiny_slm.prompt, "--prompt-text",
                "snow \u2603", *CLI_FAST, "--out", str(tmp_path / "o")], "prompt transcript contains", capsys)
    _cli_fails(["tts", *tiny_slm.flags, "--text", LONG_TEXT, "--prompt-audio", tiny_slm.prompt, *CLI_FAST,
                "--out", str(tmp_path / "o")], "the limit is 400", capsys)


OPTION_CASES = [
    ({"steps": 0}, "steps must be at least 1, got 0"),
    ({"steps": 2.5}, "steps must be a whole number"),
    ({"temperature": -0.5}, "temperature cannot be below 0"),
    ({"cfg_strength": float("nan")}, "cfg_strength must be a finite number"),
    ({"max_patches": 0}, "max_patches must be at least 1"),
    ({"patch_cap": 0}, "patch_cap must be at least 1"),
]


@pytest.mark.parametrize("options, expected", OPTION_CASES)
def test_sampling_options(pipeline, service, tiny_slm, capsys, tmp_path, options, expected):
    from demo.app import DemoInputError

    with pytest.raises(ValueError, match=expected):
        pipeline.tts("hello world", **{**FAST, **options})
    with pytest.raises(ValueError, match=expected):  # the stream refuses before its first chunk
        next(pipeline.tts_stream("hello world", **{**FAST, **options}))
    demo_keys = {"steps", "cfg_strength", "temperature"}
    if set(options) <= demo_keys:
        with pytest.raises(DemoInputError, match=expected):
            service.clone_voice(tiny_slm.prompt, "a dog ran", "hello world", **options)
        flag, value = next(iter(options.items()))
        if float(value).is_integer() or flag != "steps":  # argparse itself refuses --steps 2.5
            _cli_fails(["tts", *tiny_slm.flags, "--text", "hello", "--prompt-audio", tiny_slm.prompt,
                        f"--{flag.replace('_', '-')}", str(value), "--out", str(tmp_path / "o")],
                       "--" + expected.replace("_", "-", 1), capsys)


def test_other_api_arguments(pipeline, service, tiny_slm):
    from demo.app import DemoInputError

    for bad, expected in ((1.5, "seed must be a whole number"), ("7", "seed must be a whole number")):
        with pytest.raises(ValueError, match=expected):
            pipeline.tts("hello world", seed=bad, **FAST)
    with pytest.raises(DemoInputError, match="seed must be a whole number"):
        service.clone_voice(tiny_slm.prompt, "a dog ran", "hello world", steps=2, seed=float("nan"))
    _assert_waveform(pipeline.tts("hello world", seed=3.0, **FAST))  # a UI number field's 3.0 is fine
    with pytest.raises(ValueError, match="chunk_patches must be at least 1"):
        next(pipeline.tts_stream("hello world", chunk_patches=0, **FAST))
    for kwargs, expected in (({"beam_size": 0}, "beam_size must be at least 1"),
                             ({"max_new_tokens": -1}, "max_new_tokens must be at least 0")):
        with pytest.raises(ValueError, match=expected):
            pipeline.asr(tiny_slm.prompt, **kwargs)
    with pytest.raises(ValueError, match="must be a path or numeric samples"):
        pipeline.encode_audio(b"RIFF....")
    with pytest.raises(ValueError, match="max_audio_seconds must be positive"):
        type(pipeline)(pipeline.model, pipeline.codec, max_audio_seconds=0)


def test_time_limit_stops_generation_between_steps(pipeline):
    from holitok_slm.infer.inputs import TimeLimitExceeded, time_limit

    with time_limit(0.0), pytest.raises(TimeLimitExceeded, match="time limit of 0 s"):
        pipeline.tts("hello world", **FAST)
    with time_limit(0.0), pytest.raises(TimeLimitExceeded):
        pipeline.asr(np.full(4800, 0.1, np.float32))
    with time_limit(60.0):
        _assert_waveform(pipeline.tts("hello world", **FAST))
    _assert_waveform(pipeline.tts("hello world", **FAST))  # no limit left behind


# ---- checkpoints -----------------------------------------------------------------------------------------------------
def _broken_model(case: str, tiny_slm, folder: Path) -> Path:
    from safetensors.torch import load_file, save_file

    target = folder / case
    shutil.copytree(tiny_slm.model_dir, target)
    weights, config = target / "model.safetensors", target / "config.json"
    if case == "wrong_shaped_tensor":
        state = load_file(str(weights))
        state["stop_head.proj.weight" if "stop_head.proj.weight" in state else sorted(state)[0]] = torch.zeros(3, 5)
        save_file(state, str(weights))
    elif case == "config_latent_dim_8":  # config and weights disagree: every latent-sized tensor is named
        data = json.loads(config.read_text())
        config.write_text(json.dumps({**data, "latent_dim": 8}))
    elif case == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif case == "config_not_json":
        config.write_text("{latent_dim: 16")
    elif case == "unknown_config_key":
        config.write_text(json.dumps({**json.loads(config.read_text()), "latent_dimm": 16}))
    else:
        raise AssertionError(case)
    return target


CHECKPOINT_CASES = {
    "wrong_shaped_tensor": "does not fit",
    "config_latent_dim_8": "shape_mismatch=['dit.latent_in.weight: checkpoint (64, 16) vs model (64, 8)'",
    "truncated_weights": "model.safetensors is not a readable safetensors file",
    "config_not_json": "config.json is not valid JSON",
    "unknown_config_key": "unknown keys ['latent_dimm']",
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_broken_model_folder(tiny_slm, tmp_path, capsys, case):
    import demo.app
    from holitok.checkpoint import CheckpointError
    from holitok_slm.infer.pipeline import SpeechPipeline

    folder = _broken_model(case, tiny_slm, tmp_path)
    expected = CHECKPOINT_CASES[case]
    with pytest.raises(CheckpointError) as info:  # a ValueError naming the file and what is wrong with it
        SpeechPipeline.from_pretrained(folder, tiny_slm.tokenizer_dir)
    assert expected in str(info.value) and str(folder) in str(info.value)
    if case == "wrong_shaped_tensor":
        assert "checkpoint (3, 5) vs model" in str(info.value)
    line = _cli_fails(["asr", "--model", str(folder), "--tokenizer", str(tiny_slm.tokenizer_dir), tiny_slm.prompt,
                       "--out", str(tmp_path / "t.txt")], "not a usable UnifiedModel folder", capsys)
    assert expected in line
    with pytest.raises(SystemExit) as exit_info:  # the demo refuses to start, with one line
        demo.app.main(["--model", str(folder), "--tokenizer", str(tiny_slm.tokenizer_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("demo.app: error: ") and expected in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_tokenizer_that_does_not_fit_the_model(pipeline, tiny_slm, capsys):
    import demo.app
    from demo.app import DemoService
    from holitok import HoliTok
    from holitok_slm.infer.pipeline import SpeechPipeline

    expected = "makes 8-dim latents but the model expects 16-dim latents"
    with pytest.raises(ValueError, match=expected):
        SpeechPipeline(pipeline.model, HoliTok.from_pretrained(tiny_slm.tokenizer_8dim_dir))
    with pytest.raises(ValueError, match=expected):
        SpeechPipeline.from_pretrained(tiny_slm.model_dir, tiny_slm.tokenizer_8dim_dir)
    with pytest.raises(ValueError, match=expected):
        DemoService.from_dirs(tiny_slm.model_dir, tiny_slm.tokenizer_8dim_dir)
    with pytest.raises(SystemExit) as exit_info:
        demo.app.main(["--model", str(tiny_slm.model_dir), "--tokenizer", str(tiny_slm.tokenizer_8dim_dir)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("demo.app: error: ") and expected in err
    with pytest.raises(ValueError, match="has no 'holitok' section"):  # the model folder given as the tokenizer
        SpeechPipeline.from_pretrained(tiny_slm.model_dir, tiny_slm.model_dir)


# ---- the demo's UI layer ------------------------------------------------------------------------------------------
def test_ui_turns_every_failure_into_a_message(caplog):
    import gradio as gr

    from demo.app import DemoInputError, answer_for_user

    assert answer_for_user(lambda: "fine") == "fine"
    with pytest.raises(gr.Error) as info:
        answer_for_user(lambda: (_ for _ in ()).throw(DemoInputError("The voice prompt is silent.")))
    assert info.value.message == "The voice prompt is silent."

    def broken():
        return torch.zeros(2, 3) @ torch.zeros(4, 5)  # a shape error deep inside torch

    with pytest.raises(gr.Error) as info:
        answer_for_user(broken)
    message = info.value.message
    assert message.startswith("The server could not finish this request (RuntimeError)") and "\n" not in message
    assert "mat1 and mat2" not in message and "Traceback" not in message
    assert "demo request failed" in caplog.text  # the details go to the server log
