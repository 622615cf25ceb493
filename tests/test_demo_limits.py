"""The demo server's limits on loopback, with a tiny model: a queue with one worker and two places (more users hear
that the server is busy and to try again), an upload size cap, the audio length cap, a per-request time limit, and
the flags of `holitok-slm serve` / `python -m demo.app` that set them. Everything a user gets is an answer or a
message; the server keeps answering afterwards."""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf

from conftest import free_port, speech_like

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

CLIENTS = 8
HOLD_SECONDS = 1.0   # each transcription is held this long, so that the 8 requests overlap


class HeldASR:
    """Wraps SpeechPipeline.asr: sleeps `seconds` first (standing in for a long computation; the time limit is
    checked when the model starts) and records how many jobs ran at once."""

    def __init__(self, asr):
        self.asr, self.seconds = asr, 0.0
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(self.seconds)
            return self.asr(*args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


@pytest.fixture(scope="module")
def server(tiny_slm, tmp_path_factory):
    from demo.app import DemoService, launch
    from demo.limits import DemoLimits

    limits = DemoLimits(concurrency=1, queue_size=2, max_upload_mb=1.0, time_limit_seconds=30.0)
    service = DemoService.from_dirs(tiny_slm.model_dir, tiny_slm.tokenizer_dir, limits)
    held = HeldASR(service.pipeline.asr)
    service.pipeline.asr = held
    speech = speech_like(tmp_path_factory.mktemp("limits") / "speech.wav", sr=16000, seconds=1.0)
    expected = service.transcribe(speech)
    app, url = launch(service, free_port(), block=False)
    try:
        assert url.startswith("http://127.0.0.1:")
        yield service, held, app, url, speech, expected
    finally:
        app.close()


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def test_launch_applies_the_limits(server):
    _, _, app, _, _, _ = server
    assert app._queue.default_concurrency_limit == 1 and app._queue.max_size == 2
    assert app.max_file_size == 1024 * 1024


def test_eight_concurrent_clients_get_an_answer_or_a_busy_message(server):
    from gradio_client import handle_file

    service, held, _, url, speech, expected = server
    held.seconds = HOLD_SECONDS
    clients = [_client(url) for _ in range(CLIENTS)]
    start = threading.Barrier(CLIENTS)

    def one(client):
        start.wait(timeout=60)
        try:
            return "answer", client.predict(handle_file(speech), api_name="/transcribe")
        except Exception as err:  # the client raises QueueError for a full queue
            return "error", f"{type(err).__name__}: {err}"

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            outcomes = [f.result(timeout=120) for f in [pool.submit(one, c) for c in clients]]
    finally:
        held.seconds = 0.0
    answers = [value for kind, value in outcomes if kind == "answer"]
    busy = [value for kind, value in outcomes if kind == "error" and "Queue is full" in value and "try again" in value]
    assert len(answers) + len(busy) == CLIENTS, outcomes       # nothing else: no crash, no traceback
    assert all(text == expected for text in answers), outcomes  # every answer is the right one
    assert answers and busy, outcomes  # one worker + two places for eight simultaneous users: some wait, some not
    assert held.peak == 1  # one job at a time (--concurrency 1)
    # the server is still up and answers the next request at once
    assert _client(url).predict(handle_file(speech), api_name="/transcribe") == expected


def test_time_limit_stops_a_request_with_a_message(server, monkeypatch):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    service, held, _, url, speech, expected = server
    monkeypatch.setattr(service.limits, "time_limit_seconds", 0.5)
    monkeypatch.setattr(held, "seconds", 1.0)
    client = _client(url)
    with pytest.raises(AppError, match=r"stopped after the 0\.5 s time limit"):
        client.predict(handle_file(speech), api_name="/transcribe")
    monkeypatch.setattr(held, "seconds", 0.0)
    assert client.predict(handle_file(speech), api_name="/transcribe") == expected


def test_oversize_upload_long_audio_and_corrupt_file_get_clear_messages(server, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    _, _, _, url, speech, expected = server
    client = _client(url)
    big = tmp_path / "big.wav"  # 2.1 MB: over the 1 MiB cap, though only 11 s long
    sf.write(big, 0.1 * np.sin(np.arange(48000 * 11) / 5).astype(np.float32), 48000, subtype="FLOAT")
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1048576 bytes"):
        client.predict(handle_file(str(big)), api_name="/transcribe")
    with open(big, "rb") as f:  # a client that does not check first: the server refuses the upload itself
        response = httpx.post(client.upload_url, files=[("files", ("big.wav", f))], timeout=60)
    assert response.status_code == 413 and "File size exceeded maximum allowed size of 1048576 bytes" in response.text

    long_audio = tmp_path / "long.wav"  # 40 s at 8 kHz, 16-bit: 640 kB, under the upload cap, over the 30 s cap
    sf.write(long_audio, (0.1 * np.sin(np.arange(8000 * 40) / 3)).astype(np.float32), 8000, subtype="PCM_16")
    with pytest.raises(AppError, match="40.0 s long; the limit is 30 s"):
        client.predict(handle_file(str(long_audio)), api_name="/transcribe")
    with pytest.raises(AppError, match=r"voice prompt cannot be used: .*long.wav is 40.0 s long; the limit is 30 s"):
        client.predict(handle_file(str(long_audio)), "", "hello world", 2, 2.0, 1.0, 0, api_name="/clone_voice")

    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt no audio here")
    with pytest.raises(AppError, match="cannot read audio file"):
        client.predict(handle_file(str(corrupt)), api_name="/transcribe")
    with pytest.raises(AppError, match="enter the text to speak"):
        client.predict(handle_file(speech), "", " ", 2, 2.0, 1.0, 0, api_name="/clone_voice")
    assert client.predict(handle_file(speech), api_name="/transcribe") == expected  # still serving


def test_flags_of_serve_and_demo_app(tiny_slm, monkeypatch, capsys):
    import demo.app
    from demo.limits import DemoLimits
    from holitok_slm.cli import main

    calls = []
    monkeypatch.setattr(demo.app, "launch", lambda service, port, examples, block, host: calls.append(service))
    flags = ["--concurrency", "2", "--queue-size", "5", "--max-upload-mb", "3", "--max-audio-seconds", "20",
             "--time-limit", "60"]
    wanted = DemoLimits(concurrency=2, queue_size=5, max_upload_mb=3.0, max_prompt_seconds=20.0,
                        time_limit_seconds=60.0)
    assert main(["serve", *tiny_slm.flags, *flags]) == 0
    assert calls.pop().limits == wanted
    assert demo.app.main([*tiny_slm.flags, "--examples", "/nonexistent.json", *flags]) == 0
    assert calls.pop().limits == wanted
    assert main(["serve", *tiny_slm.flags]) == 0  # defaults: one job at a time, 8 waiting, 16 MiB, 30 s, 120 s
    assert calls.pop().limits == DemoLimits() == DemoLimits(concurrency=1, queue_size=8, max_upload_mb=16.0,
                                                            max_prompt_seconds=30.0, time_limit_seconds=120.0)
    assert main(["serve", *tiny_slm.flags, "--time-limit", "0"]) == 0
    assert calls.pop().limits.time_limit_seconds is None
    capsys.readouterr()

    assert main(["serve", *tiny_slm.flags, "--concurrency", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "holitok-slm serve: error: concurrency must be a positive number, got 0"
    with pytest.raises(SystemExit) as info:
        demo.app.main([*tiny_slm.flags, "--queue-size", "-1"])
    assert info.value.code == 2 and "queue_size must be a positive number, got -1" in capsys.readouterr().err
    assert not calls
