"""Checks of what callers hand the unified model: one function per kind of input, shared by the Python API
(SpeechPipeline), the `holitok-slm` CLI and the demo, so every front end refuses the same things in the same words.

Each check raises InputError (a ValueError) whose message names the problem and is fit to show to a user as is.
A request can also carry a time limit (`time_limit`): the generation loops call `check_time` at every step and stop
with TimeLimitExceeded once it has passed, so a server slot is never held past its limit.
"""
from __future__ import annotations

import contextvars
import math
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch

from holitok.audio import MODEL_SAMPLE_RATE, AudioError, load_audio


class InputError(ValueError):
    """Input the model cannot use; the message names the problem."""


class TimeLimitExceeded(TimeoutError):
    """The request ran past the time limit set with `time_limit`."""

    def __init__(self, seconds: float):
        super().__init__(f"the request was stopped after its time limit of {seconds:g} s")
        self.seconds = seconds


# ---- audio ---------------------------------------------------------------------------------------------------------
def load_speech(source: Any, sample_rate: int | None = None, *, what: str = "audio", min_samples: int = 1,
                max_seconds: float | None = None, silence_dbfs: float | None = None,
                target_sample_rate: int = MODEL_SAMPLE_RATE) -> torch.Tensor:
    """A path or array (any rate, mono or multi-channel) -> mono float32 tensor [L] at `target_sample_rate`.

    Refuses (InputError naming `what`): unreadable, empty or non-finite audio (holitok.audio.load_audio); audio longer
    than `max_seconds`, checked from the file header or the array's shape before any decoding or resampling; fewer
    than `min_samples` samples after resampling; and, with `silence_dbfs`, audio whose peak is below it.
    """
    try:
        wav = load_audio(source, sample_rate, target_sample_rate=target_sample_rate, max_seconds=max_seconds)
    except AudioError as err:
        raise InputError(f"The {what} cannot be used: {str(err).rstrip('.')}.") from None
    if wav.numel() < min_samples:
        raise InputError(f"The {what} is too short ({1000 * wav.numel() / target_sample_rate:.0f} ms); give at "
                         f"least {1000 * min_samples / target_sample_rate:.0f} ms.")
    if silence_dbfs is not None:
        peak = float(wav.abs().max())
        peak_dbfs = 20 * math.log10(peak) if peak > 0 else -math.inf
        if peak_dbfs < silence_dbfs:
            raise InputError(f"The {what} is silent (peak {peak_dbfs:.0f} dBFS). Please use audio with speech.")
    return wav


def trim_trailing_silence(wav: torch.Tensor, sample_rate: int, threshold_db: float,
                          keep_seconds: float = 0.04) -> torch.Tensor:
    """`wav` [L] without its trailing stretch of 10 ms frames whose RMS is more than `-threshold_db` dB under the
    loudest frame's, keeping `keep_seconds` of it (silent audio is returned as it is)."""
    frame = max(1, round(0.01 * sample_rate))
    count = wav.numel() // frame
    if count == 0:
        return wav
    rms = wav[:count * frame].reshape(count, frame).pow(2).mean(1).sqrt()
    if float(rms.max()) <= 0:
        return wav
    loud = torch.nonzero(rms >= rms.max() * 10 ** (threshold_db / 20)).flatten()
    return wav[:(int(loud[-1]) + 1) * frame + round(keep_seconds * sample_rate)]


# ---- text ----------------------------------------------------------------------------------------------------------
def check_text(text: Any, what: str = "text", *, required: bool = True, max_chars: int | None = None,
               tokenizer=None) -> str | None:
    """`text` with its whitespace runs collapsed to single spaces; None when it is empty and not `required`.

    Refuses (InputError): a value that is not a string, empty text when `required`, more than `max_chars`
    characters, and, given the model's TextTokenizer, characters it has no piece for (see
    TextTokenizer.unknown_characters). Callers that must keep the text exactly as given use the check only.
    """
    if text is not None and not isinstance(text, str):
        raise InputError(f"The {what} must be a string, got {type(text).__name__}.")
    text = " ".join((text or "").split())
    if not text:
        if required:
            raise InputError(f"Please enter the {what} (it is empty).")
        return None
    if max_chars is not None and len(text) > max_chars:
        raise InputError(f"The {what} has {len(text)} characters; the limit is {max_chars}. Please shorten it.")
    unknown = tokenizer.unknown_characters(text) if tokenizer is not None else []
    if unknown:
        raise InputError(f"The {what} contains characters this model was not trained on: "
                         f"{' '.join(repr(c) for c in unknown)}. Please remove or spell them out.")
    return text


def check_positions(model, length: int, what: str) -> None:
    """A sequence of `length` positions must fit the backbone's max_position_embeddings (RoPE would run past the
    longest sequence the model was built for and produce garbage, slowly)."""
    limit = model.config.backbone.max_position_embeddings
    if length > limit:
        raise InputError(f"{what} needs up to {length} positions but the model handles at most {limit}")


# ---- numbers -------------------------------------------------------------------------------------------------------
def check_whole(value: Any, name: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """An integer (or a float with an integer value, as UI number fields send) >= `minimum`."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or float(value) != int(value):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and int(value) < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {int(value)}")
    return int(value)


def check_number(value: Any, name: str, *, minimum: float | None = None) -> float:
    """A finite real number >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{name} cannot be below {minimum:g}, got {value:g}")
    return float(value)


# ---- time limit ----------------------------------------------------------------------------------------------------
_DEADLINE: contextvars.ContextVar[tuple[float, float] | None] = contextvars.ContextVar("holitok_deadline",
                                                                                       default=None)


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Work inside the block that reaches a `check_time` after `seconds` raises TimeLimitExceeded. None: no limit.
    Nested limits keep the earlier deadline. The limit follows the thread (context) that set it."""
    if seconds is None:
        yield
        return
    deadline = (time.monotonic() + seconds, seconds)
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None or deadline[0] < outer[0] else outer)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def check_time() -> None:
    """Raises TimeLimitExceeded once the current time limit has passed; called by the generation loops."""
    deadline = _DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline[0]:
        raise TimeLimitExceeded(deadline[1])
