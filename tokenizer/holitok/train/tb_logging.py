"""TensorBoard media: reconstructed audio clips and real-vs-reconstructed mel spectrogram images (no matplotlib)."""

from __future__ import annotations

import numpy as np
import torch

from .mel import LogMelSpectrogram

# A dark-to-bright colour ramp (black, purple, red, orange, pale yellow) for spectrogram images.
_RAMP = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], dtype=np.float32)


def colorize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """[H, W] floats -> [H, W, 3] uint8 through the ramp, after clipping to [low, high]."""
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) * (len(_RAMP) - 1)
    lower = np.floor(scaled).astype(int).clip(max=len(_RAMP) - 2)
    frac = (scaled - lower)[..., None]
    return (_RAMP[lower] * (1 - frac) + _RAMP[lower + 1] * frac).astype(np.uint8)


class SpectrogramPainter:
    """Log-mel images of a real clip above its reconstruction (low frequencies at the bottom of each half)."""

    def __init__(self, sample_rate: int, n_mels: int = 128):
        self.mel = LogMelSpectrogram(sample_rate, 2048, sample_rate // 100, n_mels)

    def __call__(self, real: torch.Tensor, fake: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            real_mel = self.mel(real.detach().float().cpu().reshape(1, -1))[0].numpy()[::-1]
            fake_mel = self.mel(fake.detach().float().cpu().reshape(1, -1))[0].numpy()[::-1]
        high = float(real_mel.max())
        gap = np.full((2, real_mel.shape[1]), high - 5.0, dtype=np.float32)
        return colorize(np.concatenate([real_mel, gap, fake_mel], axis=0), high - 5.0, high)


def log_media(writer, step: int, sample_rate: int, clips: list[torch.Tensor], reconstructions: list[torch.Tensor],
              painter: SpectrogramPainter) -> None:
    """Writes each original and reconstructed clip plus one spectrogram image per clip."""
    for index, (real, fake) in enumerate(zip(clips, reconstructions)):
        fake = fake.reshape(-1)[: real.numel()]
        writer.add_audio(f"sample_{index}/reconstruction", fake.clamp(-1, 1).cpu(), step, sample_rate=sample_rate)
        writer.add_audio(f"sample_{index}/original", real.reshape(-1).clamp(-1, 1).cpu(), step, sample_rate=sample_rate)
        writer.add_image(f"sample_{index}/mel_original_top_reconstruction_bottom", painter(real, fake), step,
                         dataformats="HWC")
