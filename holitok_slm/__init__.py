"""Unified AR+DiT spoken-language model (TTS + ASR) on HoliTok latents; public names are imported lazily."""
from __future__ import annotations

import importlib

_EXPORTS = {
    "UnifiedConfig": "holitok_slm.config",
    "load_unified_config": "holitok_slm.config",
    "UnifiedModel": "holitok_slm.model.unified",
    "TextTokenizer": "holitok_slm.text_tokenizer",
    "train_sentencepiece": "holitok_slm.text_tokenizer",
    "TTSRequest": "holitok_slm.infer.tts",
    "TTSOptions": "holitok_slm.infer.tts",
    "generate_latents": "holitok_slm.infer.tts",
    "stream_patches": "holitok_slm.infer.tts",
    "transcribe_latents": "holitok_slm.infer.asr",
    "SpeechPipeline": "holitok_slm.infer.pipeline",
    "InputError": "holitok_slm.infer.inputs",
    "TimeLimitExceeded": "holitok_slm.infer.inputs",
    "time_limit": "holitok_slm.infer.inputs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy so that light users (the training data code) do not pay for importing transformers.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'holitok_slm' has no attribute {name!r}")
