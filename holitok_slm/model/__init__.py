"""Model parts of the unified AR+DiT model (backbone, audio input paths, DiT head, small heads, the whole)."""
