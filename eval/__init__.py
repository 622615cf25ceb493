"""Evaluation: Seed-TTS-Eval, ASR WER, reconstruction metrics."""
