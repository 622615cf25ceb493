"""Gradio demo: voice cloning and transcription."""
