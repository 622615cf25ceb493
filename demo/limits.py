"""Limits of the demo server and its handlers, and their command-line flags (shared by `python -m demo`,
`python -m demo.app` and `holitok-slm serve`). Imports nothing heavy, so the CLI's parser stays fast."""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass
class DemoLimits:
    # handlers (DemoService)
    max_text_chars: int = 400          # target and prompt transcripts
    max_prompt_seconds: float = 30.0   # voice prompt / audio to transcribe (the longest training item is 30 s)
    silence_dbfs: float = -60.0        # a peak below this counts as silence (same floor as latent extraction)
    time_limit_seconds: float | None = 120.0  # per request, from when a worker picks it up; None: no limit
    # server (launch)
    concurrency: int = 1               # requests computed at once (1 on CPU: torch already uses every core)
    queue_size: int = 8                # requests waiting beyond those; more are told the server is busy
    max_upload_mb: float = 16.0        # 30 s of 48 kHz stereo float32 is 11.5 MB

    def __post_init__(self) -> None:
        def positive(name: str, allow_none: bool = False) -> None:
            value = getattr(self, name)
            if value is None and allow_none:
                return
            if value is None or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value}")

        for name in ("max_text_chars", "max_prompt_seconds", "concurrency", "queue_size", "max_upload_mb"):
            positive(name)
        positive("time_limit_seconds", allow_none=True)
        for name in ("max_text_chars", "concurrency", "queue_size"):
            if int(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"{name} must be a whole number, got {getattr(self, name)}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


_DEFAULTS = DemoLimits()


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """--concurrency, --queue-size, --max-upload-mb, --max-audio-seconds, --time-limit (defaults: DemoLimits)."""
    group = parser.add_argument_group("server limits")
    group.add_argument("--concurrency", type=int, default=_DEFAULTS.concurrency,
                       help="requests computed at once; more wait in the queue (default %(default)s)")
    group.add_argument("--queue-size", type=int, default=_DEFAULTS.queue_size,
                       help="requests that may wait for a free worker; beyond that users are told the server is "
                       "busy and to try again (default %(default)s)")
    group.add_argument("--max-upload-mb", type=float, default=_DEFAULTS.max_upload_mb,
                       help="largest audio file accepted for upload, in MiB (default %(default)s)")
    group.add_argument("--max-audio-seconds", type=float, default=_DEFAULTS.max_prompt_seconds,
                       help="longest voice prompt / audio to transcribe (default %(default)s)")
    group.add_argument("--time-limit", type=float, default=_DEFAULTS.time_limit_seconds,
                       help="seconds a request may compute before it is stopped with a message; 0: no limit "
                       "(default %(default)s)")


def limits_from_args(args: argparse.Namespace) -> DemoLimits:
    """DemoLimits from the flags of `add_limit_flags` (ValueError for a value out of range)."""
    time_limit = None if args.time_limit == 0 else args.time_limit
    return DemoLimits(max_prompt_seconds=args.max_audio_seconds, time_limit_seconds=time_limit,
                      concurrency=args.concurrency, queue_size=args.queue_size, max_upload_mb=args.max_upload_mb)

