"""CPU inference runs time-major: every layer gives the same values in either layout and keeps the time-major one."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from holitok.layers import Conv1d, ConvTranspose1d, conv1d, is_time_major, time_buffer, time_cat, to_time_major


@pytest.mark.parametrize("length,stride,dilation", [(1, 1, 1), (12, 1, 3), (40, 2, 1), (300, 1, 2)])
def test_conv1d_equals_torch_in_both_layouts(length, stride, dilation):
    torch.manual_seed(length)
    w, b = torch.randn(6, 5, 3), torch.randn(6)
    x = torch.randn(2, 5, length + dilation * 2)
    ref = F.conv1d(x, w, b, stride=stride, dilation=dilation)
    got = conv1d(to_time_major(x), w, b, stride=stride, dilation=dilation)  # short ones take the GEMM path
    assert is_time_major(got) and torch.allclose(got, ref, atol=1e-5)
    assert torch.equal(conv1d(x, w, b, stride=stride, dilation=dilation), ref)  # channel-major: PyTorch's own


def test_helpers_keep_the_layout_and_the_values():
    x = torch.randn(2, 4, 9)
    t = to_time_major(x)
    assert torch.equal(t, x) and is_time_major(t) and not is_time_major(x)
    assert is_time_major(time_buffer(None, t, 3, 1)) and torch.equal(time_buffer(None, t, 3, 1), F.pad(x, (3, 1)))
    with torch.inference_mode():  # the activation written straight into the buffer: same values, same layout
        fused = time_buffer(t[..., :2], t, 0, 1, negative_slope=0.2)
    assert is_time_major(fused)
    assert torch.equal(fused, torch.cat([x[..., :2], F.leaky_relu(x, 0.2), torch.zeros(2, 4, 1)], dim=-1))
    joined = time_cat([x[..., :2], t[..., 2:]])
    assert is_time_major(joined) and torch.equal(joined, x)


@pytest.mark.parametrize("frames", [1, 3])
def test_streaming_layers_stay_time_major_on_short_steps(frames):
    # A one-frame step once came out of the transposed conv channel-major (a reshape view), and everything after it
    # ran on the slow path: the values were right, so only the layout can show it.
    torch.manual_seed(0)
    up, conv = ConvTranspose1d(8, 6, 4, 2, weight_norm=False), Conv1d(6, 6, 3, dilation=2, weight_norm=False)
    x = torch.randn(1, 8, 12)
    with torch.inference_mode():
        ref = conv(up(x))
        state, parts = {}, []
        for start in range(0, 12, frames):
            chunk = to_time_major(x[..., start:start + frames].contiguous())
            h = up.step(chunk, state)
            assert is_time_major(h)
            out = conv.step(h, state)
            assert out.shape[-1] == 0 or is_time_major(out)
            parts.append(out)
    assert torch.allclose(torch.cat(parts, -1), ref, atol=1e-5)


def test_short_lstm_steps_equal_the_offline_lstm(monkeypatch):
    # Streaming steps of a few frames bypass oneDNN's LSTM (holitok/bottleneck.py); the carried (h, c) must make
    # any mix of step sizes equal one pass over the whole sequence, as nn.LSTM computes it.
    from holitok.bottleneck import SHORT_STEP_FRAMES, SkipLSTM
    torch.manual_seed(0)
    block = SkipLSTM(16, num_layers=3).eval()
    x = torch.randn(2, 27, 16)
    with torch.inference_mode():
        ref = block(x)
        state, parts, start = {}, [], 0
        for size in (1, 2, 1, 20, 3):  # 20 frames: longer than SHORT_STEP_FRAMES, oneDNN's path
            parts.append(block.step(x[:, start:start + size], state))
            start += size
        assert 20 > SHORT_STEP_FRAMES >= 3
        assert torch.allclose(torch.cat(parts, dim=1), ref, atol=1e-6)
        monkeypatch.setenv("HOLITOK_FAST_CPU", "0")  # the plain path gives the same values
        slow = block.step(x[:, :1], {})
    assert torch.allclose(slow, ref[:, :1], atol=1e-6)


@pytest.mark.parametrize("path", ["encode", "decode"])
def test_chunked_inference_runs_every_conv_time_major(monkeypatch, path):
    # The streaming encoder once walked the conv stack itself and skipped the switch to the time-major layout: the
    # values were right and every conv ran ~15 % slower, so only the layout each conv receives can show it.
    import holitok.layers as layers
    from holitok import HoliTok, get_preset_config
    torch.manual_seed(0)
    model = HoliTok(get_preset_config("tiny")).eval().fold_weight_norm()
    seen, plain_conv1d = [], layers.conv1d

    def recording_conv1d(x, *args, **kwargs):
        seen.append(is_time_major(x) or x.shape[1] == 1)  # the stem's 1-channel waveform has no layout
        return plain_conv1d(x, *args, **kwargs)

    monkeypatch.setattr(layers, "conv1d", recording_conv1d)
    with torch.inference_mode():
        if path == "encode":
            model.encode_posterior(0.1 * torch.randn(1, 1, 48000 * 3), chunk_frames=10)
        else:
            model.decode(torch.randn(1, model.latent_dim, 30), chunk_frames=10)
    assert len(seen) > 20 and all(seen)


def test_a_streamed_conv_without_left_padding_emits_from_its_first_step():
    # A kernel-1 conv has nothing to pad: its first step's buffer is the input itself, which must not be taken for
    # "replicate padding still waiting for a sample".
    torch.manual_seed(0)
    conv = Conv1d(4, 3, 1, weight_norm=False)
    x = torch.randn(1, 4, 5)
    with torch.inference_mode():
        got = conv.step(to_time_major(x), {})
        assert torch.allclose(got, conv(x), atol=1e-6)
