"""Inference: flow sampler, TTS generation (batched, streaming), ASR decoding, and the audio-level pipeline."""
