"""The fused anti-aliased SnakeBeta kernel equals the eager modules, offline and streamed; training never uses it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from holitok import fused_activation
from holitok.activations import Activation1d

TOL = 1e-5  # relative to the output's scale; the two paths only differ in float rounding


def _activation(channels: int, learnable: bool, seed: int) -> Activation1d:
    torch.manual_seed(seed)
    act = Activation1d(channels, learnable_filters=learnable)
    with torch.no_grad():
        act.act.alpha.normal_(0.0, 0.5)
        act.act.beta.normal_(0.0, 0.5)
        if learnable:  # per-channel filters that differ from the shared Kaiser sinc
            act.upsample.filter.add_(0.02 * torch.randn_like(act.upsample.filter))
            act.downsample.lowpass.filter.add_(0.02 * torch.randn_like(act.downsample.lowpass.filter))
    return act


def _eager(act: Activation1d, x: torch.Tensor) -> torch.Tensor:
    return act.downsample(act.act(act.upsample(x)))


def test_kernel_builds_here():
    # The development and CI machines have a C++ compiler: a build failure here is a bug, not an environment.
    assert fused_activation.kernel() is not None, "the fused SnakeBeta kernel did not build (see the warning)"


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("length", [1, 7, 5000])
def test_fused_forward_equals_eager(learnable, length):
    act = _activation(6, learnable, seed=length)
    x = 3.0 * torch.randn(2, 6, length)  # large inputs: sin's argument reaches tens of radians
    with torch.inference_mode():
        ref = _eager(act, x)
        got = act(x)
        assert fused_activation.usable(x, *act.parameters())  # so `got` came from the kernel
    assert got.shape == ref.shape
    assert (got - ref).abs().max() <= TOL * ref.abs().max()


@pytest.mark.parametrize("learnable", [False, True])
def test_fused_stream_equals_eager_stream_and_offline(learnable):
    act = _activation(5, learnable, seed=3)
    x = torch.randn(3, 5, 4200)
    cuts = [0, 1, 2, 0, 9, 4096, 60]  # empty chunks, single samples, a chunk longer than the kernel's block
    with torch.inference_mode():
        offline = act(x)
        fused_state, eager_state, fused_parts, eager_parts, start = {}, {}, [], [], 0
        for n in cuts + [x.shape[-1] - sum(cuts)]:
            chunk = x[..., start:start + n]
            fused_parts.append(act.step(chunk, fused_state))
            eager_parts.append(act.downsample.step(act.act(act.upsample.step(chunk, eager_state)), eager_state))
            start += n
    fused, eager = torch.cat(fused_parts, -1), torch.cat(eager_parts, -1)
    assert act in fused_state and act not in eager_state  # each stream kept its own path
    assert torch.equal(fused, offline)  # the kernel's blocks make streaming bit-exact with its offline pass
    assert (fused - eager).abs().max() <= TOL * eager.abs().max()


def test_training_uses_the_differentiable_modules():
    act = _activation(4, True, seed=0)
    x = torch.randn(1, 4, 64, requires_grad=True)
    assert not fused_activation.usable(x, *act.parameters())
    act(x).square().sum().backward()
    assert x.grad is not None and act.act.alpha.grad is not None and act.upsample.filter.grad is not None


def test_switch_off_by_environment():
    from holitok.layers import inference_layout, is_time_major
    with torch.no_grad():  # on by default: CPU inference runs time-major
        assert is_time_major(inference_layout(torch.zeros(1, 3, 4)))
    assert inference_layout(torch.zeros(1, 3, 4)).is_contiguous()  # training keeps the default layout
    code = ("import torch; from holitok import fused_activation as f; from holitok.layers import inference_layout; "
            "torch.set_grad_enabled(False); x = torch.zeros(1, 3, 4); "
            "print(f.kernel() is None, f.usable(x), inference_layout(x).is_contiguous())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HOLITOK_FAST_CPU": "0"})
    assert out.stdout.split() == ["True", "False", "True"]  # no kernel, and the default layout


@pytest.mark.parametrize("batch", [1, 2])
def test_fused_stream_may_change_layout_between_chunks(batch):
    # The decoder runs time-major on CPU (holitok/layers.py), but a chunk can arrive in either layout (a one-frame
    # chunk is both); the carried history must be read correctly whichever kernel variant wrote it.
    from holitok.layers import to_time_major
    act = _activation(40, False, seed=5)
    x = torch.randn(batch, 40, 700)
    with torch.inference_mode():
        ref = _eager(act, x)
        assert (act(to_time_major(x)) - ref).abs().max() <= TOL * ref.abs().max()
        for layouts in ([0, 1, 0], [1, 0, 1]):
            state, parts, start = {}, [], 0
            for n, time_major in zip([300, 1, 399], layouts):
                chunk = x[..., start:start + n].contiguous()
                parts.append(act.step(to_time_major(chunk) if time_major else chunk, state))
                start += n
            assert (torch.cat(parts, -1) - ref).abs().max() <= TOL * ref.abs().max()
