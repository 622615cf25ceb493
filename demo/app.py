"""Gradio demo of one unified model: voice cloning (prompt audio + transcript + text -> speech) and transcription.

    python -m demo                 # the weights this repository ships (weights/demo), at once
    python -m demo.app --model outputs/demo/unified/final --tokenizer outputs/demo/tokenizer [--port 7860]

Serves on 127.0.0.1 (another address with --host), with Gradio analytics off. Both tabs are API endpoints, so
scripts can call them:
    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    client.predict(handle_file("voice.wav"), "what the prompt says", "Text to say.", 10, 2.0, 1.0, 0,
                   api_name="/clone_voice")                      # -> path of a 48 kHz wav
    client.predict(handle_file("speech.wav"), api_name="/transcribe")   # -> text
The handlers live in `DemoService` (plain Python, testable without a server); bad input raises DemoInputError with a
message meant for the user, which the UI shows as an error message, never a stack trace (any other failure is
logged on the server and the user gets a one-line message).

Limits (flags of `python -m demo`, `python -m demo.app` and `holitok-slm serve`; defaults in demo/limits.py):
--concurrency jobs at once (1) with --queue-size more waiting (8; beyond that users are told the server is busy and
to try again), --max-upload-mb per uploaded file (16), --max-audio-seconds per voice prompt / audio to transcribe (30)
and --time-limit seconds of computing per request (120), after which the request stops with a message.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phone-home

import numpy as np
import torch

from holitok_slm.infer.inputs import InputError, TimeLimitExceeded, check_text, check_whole, load_speech, time_limit

from .limits import DemoLimits, add_limit_flags, limits_from_args

log = logging.getLogger(__name__)


class DemoInputError(ValueError):
    """Input the demo cannot use (or a request it had to stop); the message is shown to the user as is."""


def unknown_characters(tokenizer, text: str) -> list[str]:
    """Characters the model's text tokenizer has no piece for (TextTokenizer.unknown_characters)."""
    return tokenizer.unknown_characters(text)


class DemoService:
    """The demo's two handlers around a SpeechPipeline, with input checks."""

    def __init__(self, pipeline, limits: DemoLimits | None = None, info: dict | None = None):
        self.pipeline = pipeline
        self.limits = limits or DemoLimits()
        self.info = info or {}
        self.min_prompt_samples = pipeline.patch_samples  # one patch (160 ms)
        self.generation = pipeline.model.config.generation
        cap = getattr(pipeline, "max_audio_seconds", None)
        if cap is not None and cap < self.limits.max_prompt_seconds:
            pipeline.max_audio_seconds = self.limits.max_prompt_seconds  # the demo's limit governs

    @classmethod
    def from_dirs(cls, model_dir: str | Path, tokenizer_dir: str | Path, limits: DemoLimits | None = None,
                  load_pipeline=None) -> "DemoService":
        """`load_pipeline(model_dir, tokenizer_dir)` replaces SpeechPipeline.from_pretrained (e.g. another device)."""
        from holitok_slm.infer.pipeline import SpeechPipeline

        for name, path in (("--model", model_dir), ("--tokenizer", tokenizer_dir)):
            if not Path(path).exists():
                raise FileNotFoundError(f"{name} {path} does not exist (run `python -m demo.pipeline` to train one)")
        pipeline = (load_pipeline or SpeechPipeline.from_pretrained)(model_dir, tokenizer_dir)
        params = sum(p.numel() for p in pipeline.model.parameters())
        return cls(pipeline, limits, {"model": str(model_dir), "tokenizer": str(tokenizer_dir),
                                      "parameters": params})

    # ---- input checks (holitok_slm.infer.inputs, with the demo's limits) --------------------------------------------
    def check_audio(self, audio: Any, what: str) -> torch.Tensor:
        """Gradio numpy tuple (rate, samples) or a path -> mono 48 kHz float tensor, validated: readable, finite, at
        least one patch, at most max_prompt_seconds (from the file header, before decoding), not silent."""
        if audio is None:
            raise DemoInputError(f"Please upload or record the {what} first.")
        rate = None
        if isinstance(audio, (tuple, list)) and len(audio) == 2:
            rate, audio = audio
            audio = np.zeros(0, np.float32) if audio is None else np.asarray(audio)
        try:
            return load_speech(audio, rate, what=what, min_samples=self.min_prompt_samples,
                               max_seconds=self.limits.max_prompt_seconds, silence_dbfs=self.limits.silence_dbfs,
                               target_sample_rate=self.pipeline.sample_rate)
        except InputError as err:
            raise DemoInputError(str(err)) from None

    def check_text(self, text: str | None, what: str, required: bool = True) -> str | None:
        """Whitespace-normalised text within max_text_chars, in characters the model knows (None: empty, optional)."""
        try:
            return check_text(text, what, required=required, max_chars=self.limits.max_text_chars,
                              tokenizer=self.pipeline.model.text_tokenizer)
        except InputError as err:
            raise DemoInputError(str(err)) from None

    def _run(self, work: Callable[[], Any]) -> Any:
        """Runs the model part of a request under the time limit; the pipeline's own refusals become messages."""
        try:
            with time_limit(self.limits.time_limit_seconds):
                return work()
        except TimeLimitExceeded as err:
            raise DemoInputError(f"This request was stopped after the {err.seconds:g} s time limit. Please try a "
                                 "shorter text or recording, or fewer flow steps.") from None
        except InputError as err:  # checks only the model can make (e.g. a text too long for its positions)
            raise DemoInputError(str(err)) from None

    # ---- handlers ---------------------------------------------------------------------------------------------
    def clone_voice(self, prompt_audio: Any, prompt_text: str | None, target_text: str, steps: int | None = None,
                    cfg_strength: float | None = None, temperature: float | None = None,
                    seed: int | None = 0) -> tuple[int, np.ndarray]:
        """-> (48000, float32 waveform). An empty prompt transcript makes the model transcribe the prompt itself."""
        from holitok_slm.infer.tts import check_options

        target = self.check_text(target_text, "text to speak")
        prompt_transcript = self.check_text(prompt_text, "prompt transcript", required=False)
        options = {k: v for k, v in (("steps", steps), ("cfg_strength", cfg_strength),
                                     ("temperature", temperature)) if v is not None}
        try:
            check_options(options)
            if "steps" in options:
                options["steps"] = int(options["steps"])  # a UI number field sends 10.0
            seed = check_whole(seed, "seed", optional=True)
        except InputError as err:
            raise DemoInputError(str(err)) from None
        prompt = self.check_audio(prompt_audio, "voice prompt")
        wav = self._run(lambda: self.pipeline.tts(target, prompt_audio=prompt.numpy(), prompt_text=prompt_transcript,
                                                  sample_rate=self.pipeline.sample_rate, seed=seed, **options))
        if wav.numel() == 0:
            raise DemoInputError("The model produced no audio for this input; try another prompt or seed.")
        return self.pipeline.sample_rate, wav.detach().cpu().float().numpy()

    def transcribe(self, audio: Any) -> str:
        wav = self.check_audio(audio, "audio to transcribe")
        return self._run(lambda: self.pipeline.asr(wav.numpy(), sample_rate=self.pipeline.sample_rate))


def _to_int16(rate_and_wav: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    rate, wav = rate_and_wav
    return rate, (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)


def answer_for_user(work: Callable[[], Any]) -> Any:
    """What a UI handler returns; every failure becomes a gr.Error whose message the user sees (DemoInputError: its
    own message; anything else: a one-line note, with the traceback in the server log), never a stack trace."""
    import gradio as gr

    try:
        return work()
    except DemoInputError as err:
        raise gr.Error(str(err), print_exception=False) from None
    except Exception as err:  # a bug or a broken model: the user gets one line, the log gets the traceback
        log.exception("demo request failed")
        raise gr.Error(f"The server could not finish this request ({type(err).__name__}); the details are in its "
                       "log. Please try again or use other input.", print_exception=False) from None


def build_app(service: DemoService, examples: list[dict] | None = None):
    """The Blocks UI. `examples`: [{"prompt_wav", "prompt_text", "target_text"}] shown under the cloning tab."""
    import gradio as gr

    def clone_ui(prompt_audio, prompt_text, target_text, steps, cfg_strength, temperature, seed):
        return answer_for_user(lambda: _to_int16(service.clone_voice(prompt_audio, prompt_text, target_text, steps,
                                                                     cfg_strength, temperature, seed)))

    def transcribe_ui(audio):
        return answer_for_user(lambda: service.transcribe(audio))

    gen = service.generation
    info = service.info
    with gr.Blocks(title="HoliTok unified model demo") as app:
        gr.Markdown("# HoliTok: one model for voice cloning and transcription\n"
                    f"Model `{info.get('model', '?')}` ({info.get('parameters', 0) / 1e6:.2f}M parameters), "
                    f"tokenizer `{info.get('tokenizer', '?')}`. {info.get('note', '')}")
        with gr.Tab("Voice cloning"):
            with gr.Row():
                with gr.Column():
                    prompt_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Voice prompt")
                    prompt_text = gr.Textbox(label="Prompt transcript (what the prompt says; empty = transcribe it)")
                    target_text = gr.Textbox(label="Text to speak", lines=3)
                    with gr.Accordion("Sampling", open=True):
                        steps = gr.Slider(1, 64, value=gen.steps, step=1, label="Flow steps (Euler)")
                        cfg_strength = gr.Slider(0.0, 6.0, value=gen.cfg_strength, step=0.1, label="CFG strength")
                        temperature = gr.Slider(0.0, 2.0, value=gen.temperature, step=0.05,
                                                label="Temperature (initial noise scale)")
                        seed = gr.Number(value=0, precision=0, label="Seed")
                    clone_button = gr.Button("Generate", variant="primary")
                with gr.Column():
                    cloned = gr.Audio(label="Generated speech (48 kHz)", type="numpy", interactive=False)
            clone_button.click(clone_ui, [prompt_audio, prompt_text, target_text, steps, cfg_strength, temperature,
                                          seed], cloned, api_name="clone_voice")
            if examples:
                gr.Examples([[e["prompt_wav"], e["prompt_text"], e["target_text"]] for e in examples],
                            [prompt_audio, prompt_text, target_text], label="Held-out voices (never seen in training)")
        with gr.Tab("Transcription"):
            with gr.Row():
                with gr.Column():
                    asr_audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech")
                    asr_button = gr.Button("Transcribe", variant="primary")
                with gr.Column():
                    transcript = gr.Textbox(label="Transcript", lines=3)
            asr_button.click(transcribe_ui, asr_audio, transcript, api_name="transcribe")
            if examples:
                gr.Examples([[e["prompt_wav"]] for e in examples], [asr_audio])
    return app


def launch(service: DemoService, port: int = 7860, examples: list[dict] | None = None, block: bool = True,
           host: str = "127.0.0.1"):
    """Starts the server on host:port with the queue and upload limits of `service.limits`; with block=False
    returns (app, url) and the server keeps running."""
    limits = service.limits
    app = build_app(service, examples)
    app.queue(default_concurrency_limit=limits.concurrency, max_size=limits.queue_size)
    allowed = sorted({str(Path(e["prompt_wav"]).resolve().parent) for e in examples or []})
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
               allowed_paths=allowed, max_file_size=limits.max_upload_bytes)
    return app, f"http://{host}:{port}/"


def load_examples(path: str | Path | None) -> list[dict]:
    if path is None or not Path(path).is_file():
        return []
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_service(model: str | Path | None = None, tokenizer: str | Path | None = None,
                 release: str | Path | None = None, examples: str | Path | None = None,
                 load_pipeline=None, limits: DemoLimits | None = None) -> tuple[DemoService, list[dict]]:
    """(service, examples) from a release folder (checked against its manifest first: ReleaseError otherwise), or
    from a model + tokenizer folder and an optional examples JSON. A missing folder raises FileNotFoundError;
    `load_pipeline` as in DemoService.from_dirs."""
    note = None
    if release is not None:
        from .release import verify_release

        manifest = verify_release(release)
        release = Path(release)
        model, tokenizer, examples = release / "unified", release / "tokenizer", release / "examples.json"
        note = (f"Shipped weights, trained by `{manifest['command']}` at commit {manifest['commit'][:10]}; "
                f"quality: {release / 'report.md'}.")
    service = DemoService.from_dirs(model, tokenizer, limits, load_pipeline=load_pipeline)
    items = load_examples(examples)
    if release is not None:
        service.info["note"] = note
        items = [{**e, "prompt_wav": str(release / e["prompt_wav"])} for e in items]
    return service, items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/demo/unified/final", help="UnifiedModel directory")
    parser.add_argument("--tokenizer", default="outputs/demo/tokenizer", help="HoliTok directory or model.pt")
    parser.add_argument("--examples", default="outputs/demo/examples.json",
                        help="JSON list of {prompt_wav, prompt_text, target_text} (written by demo.pipeline)")
    parser.add_argument("--release", help="a release folder (demo/release.py: weights/demo is the shipped one); "
                        "replaces --model, --tokenizer and --examples, and is checked against its manifest first")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add_limit_flags(parser)
    args = parser.parse_args(argv)
    try:
        limits = limits_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        service, examples = load_service(args.model, args.tokenizer, args.release, args.examples, limits=limits)
    except FileNotFoundError as err:
        parser.error(str(err))
    except (ValueError, OSError, RuntimeError) as err:
        # ReleaseError (a release that fails its manifest), CheckpointError (a folder that is not a usable model),
        # a tokenizer that does not fit the model: one line, exit status 2
        parser.exit(2, f"demo.app: error: {' '.join(str(err).split())}\n")
    print(f"demo on http://{args.host}:{args.port}/  (Ctrl+C stops it)", flush=True)
    launch(service, args.port, examples, block=True, host=args.host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
