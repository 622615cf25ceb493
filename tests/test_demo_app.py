"""The Gradio app serves on a free local port and both endpoints answer a gradio_client call with real output."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from conftest import free_port
from demo.smoke import smoke_outputs

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from demo.app import DemoService, launch

    smoke = smoke_outputs(tmp_path_factory.getbasetemp())
    service = DemoService.from_dirs(smoke.model, smoke.tokenizer)
    app, url = launch(service, free_port(), block=False)
    try:
        yield smoke, url
    finally:
        app.close()


@pytest.mark.slow
def test_both_endpoints_answer_through_gradio_client(served):
    from gradio_client import Client, handle_file

    smoke, url = served
    assert url.startswith("http://127.0.0.1:")
    records = [json.loads(line) for line in (smoke.corpus / "train.jsonl").read_text().splitlines()]
    prompt_wav = str(smoke.corpus / records[0]["audio"])
    client = Client(url, verbose=False)
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/clone_voice", "/transcribe"} <= names

    out_path = client.predict(handle_file(prompt_wav), records[0]["text"], records[1]["text"], 2, 2.0, 1.0, 0,
                              api_name="/clone_voice")
    audio, rate = sf.read(out_path)
    assert rate == 48000 and audio.ndim == 1 and audio.size > 0 and np.isfinite(audio).all()

    text = client.predict(handle_file(prompt_wav), api_name="/transcribe")
    assert isinstance(text, str)


@pytest.mark.slow
def test_bad_input_reaches_the_client_as_a_readable_error(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    _, url = served
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(48000, np.float32), 48000)
    client = Client(url, verbose=False)
    with pytest.raises(AppError, match="audio to transcribe is silent"):
        client.predict(handle_file(str(silent)), api_name="/transcribe")
