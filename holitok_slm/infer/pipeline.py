"""Audio-level front end: HoliTok codec + UnifiedModel for voice-cloning TTS (one-shot, batched, streaming) and ASR."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Generator, Sequence

import torch

from ..layout import whole_patches
from ..model.unified import UnifiedModel
from .asr import transcribe_latents
from .inputs import InputError, check_time, check_whole, load_speech, trim_trailing_silence
from .tts import (TTSOptions, TTSRequest, TTSResult, check_request_texts, generate_latents, stream_patches,
                  tts_result)

# Twice the longest training item (train configs: data.max_frames_per_item = 750 frames = 30 s).
DEFAULT_MAX_AUDIO_SECONDS = 60.0


class SpeechPipeline:
    """Accepts paths or arrays at any sample rate (resampled to 48 kHz mono by holitok.audio.load_audio) and returns
    48 kHz mono waveforms [L]. The voice prompt's latents are decoded as context in front of the generated
    latents and their samples are cut off, so the first generated frames get the decoder lookahead they expect.

    Bad input raises a ValueError naming the problem before any heavy work (holitok_slm.infer.inputs.InputError;
    holitok.checkpoint.CheckpointError for a broken model folder): empty, non-finite or unreadable audio, audio
    longer than `max_audio_seconds` (None: no limit; checked from the file header or the array's shape before
    decoding), a voice prompt shorter than one patch, empty or non-string text, a text or audio longer than the
    model's positions, out-of-range sampling options, a tokenizer whose latent size does not fit the model. Silent
    audio and characters outside a sentencepiece vocabulary (byte-fallback pieces; TextTokenizer.unknown_characters
    lists them) are accepted: the front ends that talk to people (CLI, demo) refuse those with the same checks
    (holitok_slm.infer.inputs). Work inside `holitok_slm.infer.inputs.time_limit(seconds)` stops between two
    generation steps with TimeLimitExceeded once the limit has passed.
    """

    def __init__(self, model: UnifiedModel, codec, max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS):
        if codec.latent_dim != model.config.latent_dim:
            raise ValueError(f"the tokenizer (codec) makes {codec.latent_dim}-dim latents but the model expects "
                             f"{model.config.latent_dim}-dim latents: load the HoliTok tokenizer the model was "
                             "trained with")
        if getattr(codec, "pitch_channels", 0) != model.config.pitch_channels:
            raise ValueError(f"the tokenizer (codec) ends its latents with {getattr(codec, 'pitch_channels', 0)} pitch "
                             f"channels but the model was told {model.config.pitch_channels} (model.pitch_channels "
                             "in its config.json): load the HoliTok tokenizer the model was trained with")
        if max_audio_seconds is not None and not max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be positive or None, got {max_audio_seconds}")
        self.model = model.eval()
        self.codec = codec.eval()
        self.max_audio_seconds = max_audio_seconds

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, codec_source: Any, device: str = "cpu",
                        max_audio_seconds: float | None = DEFAULT_MAX_AUDIO_SECONDS) -> "SpeechPipeline":
        from holitok import HoliTok

        return cls(UnifiedModel.from_pretrained(model_dir, map_location=device),
                   HoliTok.from_pretrained(codec_source, device=device), max_audio_seconds)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    # ---- audio <-> latents ---------------------------------------------------------------------------------------
    @property
    def patch_samples(self) -> int:
        """Samples of one model patch at 48 kHz (160 ms): the shortest usable voice prompt."""
        return self.model.config.patch_size * self.codec.hop_size

    def load_audio(self, audio: Any, sample_rate: int | None = None, what: str = "audio",
                   min_samples: int = 1) -> torch.Tensor:
        """Path or array (any rate, mono/stereo) -> validated 48 kHz mono waveform [L] (InputError otherwise)."""
        return load_speech(audio, sample_rate, what=what, min_samples=min_samples,
                           max_seconds=self.max_audio_seconds, target_sample_rate=self.sample_rate)

    def encode_audio(self, audio: Any, sample_rate: int | None = None, what: str = "audio",
                     min_samples: int = 1, trailing_silence_db: float | None = None) -> torch.Tensor:
        """Path or array (any rate, mono/stereo) -> raw latents [T, D] (posterior mean); with `trailing_silence_db`
        the audio's trailing silence is cut first (inputs.trim_trailing_silence)."""
        wav = self.load_audio(audio, sample_rate, what, min_samples)
        if trailing_silence_db is not None:
            wav = trim_trailing_silence(wav, self.sample_rate, trailing_silence_db)
        check_time()
        return self.codec.encode(wav[None, None])[0].transpose(0, 1)

    def _generator(self, seed: Any) -> torch.Generator | None:
        seed = check_whole(seed, "seed", optional=True)
        return None if seed is None else torch.Generator(self.model.latent_scale.device).manual_seed(seed)

    def _decode_after_prompt(self, prompt: torch.Tensor | None, latents: torch.Tensor) -> torch.Tensor:
        context = 0 if prompt is None else prompt.shape[0]
        full = latents if prompt is None else torch.cat([prompt.to(latents), latents])
        if full.shape[0] == 0:
            return torch.zeros(0)
        return self.codec.decode(full.T[None])[0, 0, context * self.codec.hop_size:]

    def _requests(self, texts, prompt_audios, prompt_texts, instructions, sample_rate, options: TTSOptions):
        """Every text is checked before any audio is encoded (a typo in the last item fails at once)."""
        lists = {"texts": texts, "prompt_audios": prompt_audios, "prompt_texts": prompt_texts,
                 "instructions": instructions}
        for name, value in lists.items():
            if isinstance(value, (str, bytes)):
                raise InputError(f"{name} must be a list (one entry per utterance), got a single "
                                 f"{type(value).__name__}; tts() and tts_stream() take one text")
        n = len(texts)
        prompt_audios = list(prompt_audios) if prompt_audios is not None else [None] * n
        prompt_texts = list(prompt_texts) if prompt_texts is not None else [None] * n
        instructions = list(instructions) if instructions is not None else [None] * n
        if not len(prompt_audios) == len(prompt_texts) == len(instructions) == n:
            raise InputError("texts, prompt_audios, prompt_texts and instructions must have the same length")
        for text, prompt_text, instruction in zip(texts, prompt_texts, instructions):
            check_request_texts(text, prompt_text, instruction)
        requests, prompts_latents = [], []
        for text, audio, prompt_text, instruction in zip(texts, prompt_audios, prompt_texts, instructions):
            latents = None
            if audio is not None:
                latents = self.encode_audio(audio, sample_rate, "voice prompt", self.patch_samples,
                                            options.prompt_trailing_silence_db)
                latents = whole_patches(latents, self.model.config.patch_size, "voice prompt")
                if prompt_text is None:  # the same model transcribes the prompt for continuation
                    prompt_text = transcribe_latents(self.model, [latents])[0]
            requests.append(TTSRequest(text, latents, prompt_text, instruction))
            prompts_latents.append(latents)
        return requests, prompts_latents

    # ---- TTS -------------------------------------------------------------------------------------------------------
    def tts(self, text: str, prompt_audio: Any = None, prompt_text: str | None = None, instruction: str | None = None,
            sample_rate: int | None = None, seed: int | None = None, **options) -> torch.Tensor:
        """One utterance -> waveform [L] at 48 kHz. `options`: TTSOptions fields (steps, cfg_strength, ...)."""
        return self.tts_batch([text], [prompt_audio], [prompt_text], [instruction], sample_rate, seed, **options)[0]

    def tts_batch(self, texts: Sequence[str], prompt_audios: Sequence[Any] | None = None,
                  prompt_texts: Sequence[str | None] | None = None, instructions: Sequence[str | None] | None = None,
                  sample_rate: int | None = None, seed: int | None = None, **options) -> list[torch.Tensor]:
        """Batched TTS; each item stops on its own (EOS or its length cap)."""
        return [wav for wav, _ in self.synthesize(texts, prompt_audios, prompt_texts, instructions, sample_rate, seed,
                                                  **options)]

    def synthesize(self, texts: Sequence[str], prompt_audios: Sequence[Any] | None = None,
                   prompt_texts: Sequence[str | None] | None = None, instructions: Sequence[str | None] | None = None,
                   sample_rate: int | None = None, seed: int | None = None,
                   **options) -> list[tuple[torch.Tensor, TTSResult]]:
        """`tts_batch` plus each item's TTSResult (whether the stop head ended it, its length bounds)."""
        tts_options = TTSOptions.from_model(self.model, **options)
        generator = self._generator(seed)
        requests, prompt_latents = self._requests(texts, prompt_audios, prompt_texts, instructions, sample_rate,
                                                  tts_options)
        if not requests:
            return []
        results = generate_latents(self.model, requests, tts_options, generator)
        return [(self._decode_after_prompt(p, r.latents), r) for p, r in zip(prompt_latents, results)]

    def tts_stream(self, text: str, prompt_audio: Any = None, prompt_text: str | None = None,
                   instruction: str | None = None, sample_rate: int | None = None, seed: int | None = None,
                   chunk_patches: int = 1, **options) -> Generator[torch.Tensor, None, TTSResult]:
        """Yields waveform chunks [n] as patches are generated; their concatenation equals `tts(...)`. The
        generator's return value (StopIteration.value, or `yield from`'s result) is the utterance's TTSResult."""
        chunk_patches = check_whole(chunk_patches, "chunk_patches", minimum=1)
        tts_options = TTSOptions.from_model(self.model, **options)
        generator = self._generator(seed)
        requests, prompt_latents = self._requests([text], [prompt_audio], [prompt_text], [instruction], sample_rate,
                                                  tts_options)
        decoder = self.codec.stream_decoder()
        to_skip = 0
        if prompt_latents[0] is not None:
            # The prompt is decoder context only: its samples (delayed by the lookahead) are dropped.
            to_skip = prompt_latents[0].shape[0] * self.codec.hop_size
        pending: list[torch.Tensor] = []
        generated: list[torch.Tensor] = []

        def emit(wav: torch.Tensor) -> torch.Tensor:
            nonlocal to_skip
            wav = wav[0, 0]
            cut = min(to_skip, wav.shape[0])
            to_skip -= cut
            return wav[cut:]

        if prompt_latents[0] is not None:
            chunk = emit(decoder.step(prompt_latents[0].T[None]))
            if chunk.numel():
                yield chunk
        for patch, active in stream_patches(self.model, requests, tts_options, generator):
            if not bool(active[0]):
                continue
            pending.append(patch[0])
            generated.append(patch[0])
            if len(pending) >= chunk_patches:
                chunk = emit(decoder.step(torch.cat(pending).T[None]))
                pending = []
                if chunk.numel():
                    yield chunk
        if pending:
            chunk = emit(decoder.step(torch.cat(pending).T[None]))
            if chunk.numel():
                yield chunk
        tail = emit(decoder.flush())
        if tail.numel():
            yield tail
        return tts_result(self.model, requests[0], generated, tts_options)

    # ---- ASR -------------------------------------------------------------------------------------------------------
    def asr(self, audio: Any, sample_rate: int | None = None, beam_size: int | None = None,
            max_new_tokens: int | None = None, ctc_weight: float | None = None) -> str | list[str]:
        """A path/array, or a list of them -> transcript(s). `beam_size` / `ctc_weight` (joint CTC/attention search):
        the checkpoint's generation defaults unless given (holitok_slm/infer/asr.py)."""
        many = isinstance(audio, (list, tuple))
        items = list(audio) if many else [audio]
        latents = [self.encode_audio(a, sample_rate) for a in items]
        texts = transcribe_latents(self.model, latents, max_new_tokens=max_new_tokens, beam_size=beam_size,
                                   ctc_weight=ctc_weight)
        return texts if many else texts[0]
