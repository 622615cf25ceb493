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
message meant for the user, which the UI shows as an error instead of a stack trace.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phone-home

import numpy as np
import torch

from holitok.audio import AudioError, load_audio


class DemoInputError(ValueError):
    """Input the demo cannot use; the message is shown to the user as is."""


@dataclass
class DemoLimits:
    max_text_chars: int = 400          # target and prompt transcripts
    max_prompt_seconds: float = 30.0   # voice prompt / audio to transcribe
    silence_dbfs: float = -60.0        # a peak below this counts as silence (same floor as latent extraction)


def unknown_characters(tokenizer, text: str) -> list[str]:
    """Characters the model's text tokenizer (holitok_slm TextTokenizer) has no piece for. A sentencepiece tokenizer
    trained on the corpus encodes them as raw byte pieces the model never saw in training, so it would say nonsense."""
    if tokenizer.kind != "sentencepiece":
        return []  # byte-level BPE (Qwen) covers every character it was trained on
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor()
    processor.LoadFromSerializedProto(tokenizer._backend.serialized_model_proto())
    found = []
    for ch in dict.fromkeys(text):
        if ch.isspace():
            continue
        if any(processor.IsByte(i) for i in processor.EncodeAsIds(ch)) and ch not in found:
            found.append(ch)
    return found


class DemoService:
    """The demo's two handlers around a SpeechPipeline, with input checks."""

    def __init__(self, pipeline, limits: DemoLimits | None = None, info: dict | None = None):
        self.pipeline = pipeline
        self.limits = limits or DemoLimits()
        self.info = info or {}
        model = pipeline.model
        self.min_prompt_samples = model.config.patch_size * pipeline.codec.hop_size  # one patch (160 ms)
        self.generation = model.config.generation

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

    # ---- input checks ------------------------------------------------------------------------------------------
    def check_audio(self, audio: Any, what: str) -> torch.Tensor:
        """Gradio numpy tuple (rate, samples) or a path -> mono 48 kHz float tensor, validated."""
        if audio is None:
            raise DemoInputError(f"Please upload or record the {what} first.")
        try:
            if isinstance(audio, (tuple, list)) and len(audio) == 2:
                rate, samples = audio
                if samples is None or np.asarray(samples).size == 0:
                    raise DemoInputError(f"The {what} is empty.")
                wav = load_audio(np.asarray(samples), int(rate))
            else:
                wav = load_audio(audio)
        except AudioError as err:
            raise DemoInputError(f"The {what} cannot be used: {err}") from err
        seconds = wav.shape[-1] / self.pipeline.sample_rate
        if wav.numel() < self.min_prompt_samples:
            raise DemoInputError(f"The {what} is too short ({seconds * 1000:.0f} ms); give at least "
                                 f"{1000 * self.min_prompt_samples / self.pipeline.sample_rate:.0f} ms.")
        if seconds > self.limits.max_prompt_seconds:
            raise DemoInputError(f"The {what} is {seconds:.1f} s long; the limit is "
                                 f"{self.limits.max_prompt_seconds:.0f} s. Please trim it.")
        peak = float(wav.abs().max())
        peak_dbfs = 20 * np.log10(peak) if peak > 0 else -np.inf
        if peak_dbfs < self.limits.silence_dbfs:
            raise DemoInputError(f"The {what} is silent (peak {peak_dbfs:.0f} dBFS). Please use audio with speech.")
        return wav

    def check_text(self, text: str | None, what: str, required: bool = True) -> str | None:
        text = " ".join((text or "").split())
        if not text:
            if required:
                raise DemoInputError(f"Please enter the {what}.")
            return None
        if len(text) > self.limits.max_text_chars:
            raise DemoInputError(f"The {what} has {len(text)} characters; the limit is {self.limits.max_text_chars}. "
                                 "Please shorten it.")
        unknown = unknown_characters(self.pipeline.model.text_tokenizer, text)
        if unknown:
            raise DemoInputError(f"The {what} contains characters this model was not trained on: "
                                 f"{' '.join(repr(c) for c in unknown)}. Please remove or spell them out.")
        return text

    # ---- handlers ---------------------------------------------------------------------------------------------
    def clone_voice(self, prompt_audio: Any, prompt_text: str | None, target_text: str, steps: int | None = None,
                    cfg_strength: float | None = None, temperature: float | None = None,
                    seed: int | None = 0) -> tuple[int, np.ndarray]:
        """-> (48000, float32 waveform). An empty prompt transcript makes the model transcribe the prompt itself."""
        target = self.check_text(target_text, "text to speak")
        prompt_transcript = self.check_text(prompt_text, "prompt transcript", required=False)
        prompt = self.check_audio(prompt_audio, "voice prompt")
        options = {}
        if steps is not None:
            if int(steps) < 1:
                raise DemoInputError("Sampling steps must be at least 1.")
            options["steps"] = int(steps)
        if cfg_strength is not None:
            options["cfg_strength"] = float(cfg_strength)
        if temperature is not None:
            if float(temperature) < 0:
                raise DemoInputError("Temperature cannot be negative.")
            options["temperature"] = float(temperature)
        wav = self.pipeline.tts(target, prompt_audio=prompt.numpy(), prompt_text=prompt_transcript,
                                sample_rate=self.pipeline.sample_rate,
                                seed=None if seed is None else int(seed), **options)
        if wav.numel() == 0:
            raise DemoInputError("The model produced no audio for this input; try another prompt or seed.")
        return self.pipeline.sample_rate, wav.detach().cpu().float().numpy()

    def transcribe(self, audio: Any) -> str:
        wav = self.check_audio(audio, "audio to transcribe")
        return self.pipeline.asr(wav.numpy(), sample_rate=self.pipeline.sample_rate)


def _to_int16(rate_and_wav: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    rate, wav = rate_and_wav
    return rate, (np.clip(wav, -1.0, 1.0) * 32767).astype(np.int16)


def build_app(service: DemoService, examples: list[dict] | None = None):
    """The Blocks UI. `examples`: [{"prompt_wav", "prompt_text", "target_text"}] shown under the cloning tab."""
    import gradio as gr

    def clone_ui(prompt_audio, prompt_text, target_text, steps, cfg_strength, temperature, seed):
        try:
            return _to_int16(service.clone_voice(prompt_audio, prompt_text, target_text, steps, cfg_strength,
                                                 temperature, seed))
        except DemoInputError as err:
            raise gr.Error(str(err)) from None

    def transcribe_ui(audio):
        try:
            return service.transcribe(audio)
        except DemoInputError as err:
            raise gr.Error(str(err)) from None

    gen = service.generation
    info = service.info
    with gr.Blocks(title="HoliTok unified model demo") as app:
        gr.Markdown("# HoliTok: one model for voice cloning and transcription\n"
                    f"Model `{info.get('model', '?')}` ({info.get('parameters', 0) / 1e6:.2f}M parameters), "
                    f"tokenizer `{info.get('tokenizer', '?')}`. {info.get('note', '')}")
        with gr.Tab("Voice cloning"):
            with gr.Row():
                with gr.Column():
                    prompt_audio = gr.Audio(sources=["upload", "microphone"], type="numpy", label="Voice prompt")
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
                    asr_audio = gr.Audio(sources=["upload", "microphone"], type="numpy", label="Speech")
                    asr_button = gr.Button("Transcribe", variant="primary")
                with gr.Column():
                    transcript = gr.Textbox(label="Transcript", lines=3)
            asr_button.click(transcribe_ui, asr_audio, transcript, api_name="transcribe")
            if examples:
                gr.Examples([[e["prompt_wav"]] for e in examples], [asr_audio])
    return app


def launch(service: DemoService, port: int = 7860, examples: list[dict] | None = None, block: bool = True,
           host: str = "127.0.0.1"):
    """Starts the server on host:port; with block=False returns (app, url) and the server keeps running."""
    app = build_app(service, examples)
    allowed = sorted({str(Path(e["prompt_wav"]).resolve().parent) for e in examples or []})
    app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=not block,
               allowed_paths=allowed)
    return app, f"http://{host}:{port}/"


def load_examples(path: str | Path | None) -> list[dict]:
    if path is None or not Path(path).is_file():
        return []
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_service(model: str | Path | None = None, tokenizer: str | Path | None = None,
                 release: str | Path | None = None, examples: str | Path | None = None,
                 load_pipeline=None) -> tuple[DemoService, list[dict]]:
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
    service = DemoService.from_dirs(model, tokenizer, load_pipeline=load_pipeline)
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
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from .release import ReleaseError

    try:
        service, examples = load_service(args.model, args.tokenizer, args.release, args.examples)
    except ReleaseError as err:
        parser.exit(2, f"demo.app: {err}\n")
    except FileNotFoundError as err:
        parser.error(str(err))
    print(f"demo on http://{args.host}:{args.port}/  (Ctrl+C stops it)", flush=True)
    launch(service, args.port, examples, block=True, host=args.host)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
