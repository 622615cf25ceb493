"""Unified AR+DiT spoken-language model (TTS + ASR) on HoliTok latents."""
