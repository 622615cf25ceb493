"""ASR time masking on latents: only ASR items, about the asked share of frames, the store's tensors untouched,
reproducible from torch's generator (which checkpoints save)."""
import pytest
import torch

from holitok_slm.train.augment import mask_asr_spans
from holitok_slm.train.config import LatentDataConfig


def items():
    torch.manual_seed(0)
    return [{"id": "a", "task": "asr", "latents": torch.randn(200, 8), "text": "x"},
            {"id": "b", "task": "tts", "latents": torch.randn(120, 8), "text": "y"}]


def test_only_asr_frames_are_masked_to_the_item_mean_at_about_the_ratio():
    batch = items()
    original = [item["latents"].clone() for item in batch]
    torch.manual_seed(1)
    out = mask_asr_spans(batch, ratio=0.2, span=10)
    assert torch.equal(out[1]["latents"], original[1]) and out[1] is batch[1]  # TTS targets untouched
    assert torch.equal(batch[0]["latents"], original[0])  # the store's tensor is not modified in place
    changed = (out[0]["latents"] != original[0]).any(dim=1)
    assert 0.1 * 200 <= int(changed.sum()) <= 0.2 * 200  # spans may overlap: at most the budget
    assert torch.allclose(out[0]["latents"][changed], original[0].mean(dim=0).expand(int(changed.sum()), -1))
    fresh = items()
    torch.manual_seed(1)
    again = mask_asr_spans(fresh, ratio=0.2, span=10)
    assert torch.equal(again[0]["latents"], out[0]["latents"])  # same generator state, same masks
    assert mask_asr_spans(batch, ratio=0.0, span=10) is batch


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="asr_time_mask_ratio"):
        LatentDataConfig(asr_time_mask_ratio=1.0)
    with pytest.raises(ValueError, match="span"):
        mask_asr_spans(items(), ratio=0.1, span=0)


def test_tts_text_dropout_marks_about_the_share_of_tts_items_only():
    from holitok_slm.train.augment import drop_tts_text

    batch = items() * 200
    torch.manual_seed(3)
    out = drop_tts_text(batch, 0.25)
    tts = [item for item in out if item["task"] == "tts"]
    assert not any(item.get("text_dropped") for item in out if item["task"] == "asr")
    assert 0.18 < sum(bool(item.get("text_dropped")) for item in tts) / len(tts) < 0.32
    assert not any("text_dropped" in item for item in batch)  # new dicts: the store's items are left as they were
    assert drop_tts_text(batch, 0.0) is batch
    torch.manual_seed(3)
    assert [i.get("text_dropped") for i in drop_tts_text(batch, 0.25)] == [i.get("text_dropped") for i in out]
    with pytest.raises(ValueError, match="text_dropout"):
        drop_tts_text(batch, 1.0)
