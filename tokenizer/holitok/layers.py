"""Weight-normed causal (and lookahead) convolutions that run offline or as a stream with carried state.

Weight norm lives here and only here: layers store `weight_g`/`weight_v` (the authors' checkpoint layout, norm over
every dim but 0) until `fold_weight_norm()` replaces them by a plain `weight` for inference.

Streaming: `step(x, state)` takes any number of new frames and returns every output frame that those inputs fully
determine; `flush(state)` feeds the right-hand (lookahead) zero padding at the true end of the signal. The concatenated
stream outputs equal the offline `forward` on the whole input. `state` is a dict owned by the caller, keyed by module.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def frame_mask(frame_lengths: Tensor, total: int, offset: int = 0) -> Tensor:
    """[B, 1, total] mask of positions offset..offset+total-1 (frames or samples) inside each item's valid length."""
    idx = torch.arange(offset, offset + total, device=frame_lengths.device)
    return (idx[None, :] < frame_lengths[:, None])[:, None, :]


def _norm_except_dim0(v: Tensor) -> Tensor:
    return v.norm(dim=tuple(range(1, v.dim())), keepdim=True)


def weight_norm_parts(weight: Tensor) -> tuple[Tensor, Tensor]:
    """(g, v) with g * v / ||v|| == weight: g = ||w|| per output channel, v = w. A zero row (a projection that starts
    or was reset at zero) keeps g = 0 with v = 1: v = w would make it 0 / 0."""
    g = _norm_except_dim0(weight)
    return g, torch.where(g == 0, torch.ones_like(weight), weight)


class WeightNormed(nn.Module):
    """A layer whose weight is `weight_g * weight_v / ||weight_v||` until folded."""

    def __init__(self, weight: Tensor, bias: Tensor | None, weight_norm: bool = True) -> None:
        super().__init__()
        if weight_norm:
            self.weight_g = nn.Parameter(_norm_except_dim0(weight).detach().clone())
            self.weight_v = nn.Parameter(weight.detach().clone())
        else:
            self.weight = nn.Parameter(weight.detach().clone())
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @property
    def has_weight_norm(self) -> bool:
        return "weight_v" in self._parameters

    def get_weight(self) -> Tensor:
        if self.has_weight_norm:
            return self.weight_v * (self.weight_g / _norm_except_dim0(self.weight_v))
        return self.weight

    def fold_weight_norm(self) -> None:
        if not self.has_weight_norm:
            return
        with torch.no_grad():
            w = self.get_weight().detach().clone()
        del self.weight_g, self.weight_v
        self.weight = nn.Parameter(w)

    def unfold_weight_norm(self) -> None:
        """Back to the g/v layout (g = ||w||, v = w): what the authors' checkpoint format stores."""
        if self.has_weight_norm:
            return
        w = self.weight.detach().clone()
        del self.weight
        g, v = weight_norm_parts(w)
        self.weight_g = nn.Parameter(g)
        self.weight_v = nn.Parameter(v)


# ---- time-major layout ------------------------------------------------------------------------------------------
# Inference on a CPU keeps the encoder's and decoder's [B, C, T] tensors time-major in memory ([B, T, C] transposed):
# oneDNN's convolutions are 1.5-3x faster on channels-last input than on channel-major rows (README, Benchmark). Every
# helper below computes the same values for either layout and returns the layout it was given, so the layers are
# correct on both and fast on the one they get.

FAST_CPU_SWITCH = "HOLITOK_FAST_CPU"


def fast_cpu_enabled() -> bool:
    """CPU inference paths (time-major layout, fused kernels); `HOLITOK_FAST_CPU=0` runs the plain eager modules in
    PyTorch's default layout, which is the authors' graph (bench/tokenizer_speed.py's baseline)."""
    return os.environ.get(FAST_CPU_SWITCH, "1") != "0"


def is_time_major(x: Tensor) -> bool:
    """A [B, C, T] tensor stored as [B, T, C] (channels-last)."""
    return x.dim() == 3 and x.shape[1] > 1 and x.stride(1) == 1 and (x.shape[2] == 1 or x.stride(2) == x.shape[1])


def to_time_major(x: Tensor) -> Tensor:
    return x if is_time_major(x) else x.transpose(1, 2).contiguous().transpose(1, 2)


def inference_layout(x: Tensor) -> Tensor:
    """Time-major for CPU inference (faster convolutions, same values); training and GPUs keep the default layout."""
    if x.device.type == "cpu" and not torch.is_grad_enabled() and fast_cpu_enabled():
        return to_time_major(x)
    return x


def time_cat(parts: list[Tensor]) -> Tensor:
    """Concatenate [B, C, T_i] along time: time-major if any part is."""
    if any(is_time_major(p) for p in parts):
        return torch.cat([p.transpose(1, 2) for p in parts], dim=1).transpose(1, 2)
    return torch.cat(parts, dim=-1)


SHORT_CONV_OUTPUTS = 64  # at most this many output samples: a GEMM over the unfolded input (see conv1d)


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1, dilation: int = 1,
           groups: int = 1) -> Tensor:
    """F.conv1d; a time-major input runs as a channels-last conv2d and stays time-major.

    A short time-major input (a streaming step of a frame or two) is one GEMM over its unfolded windows instead:
    oneDNN reorders the whole weight on every call, which for a 768-channel k11 layer costs more than the arithmetic
    of a few outputs."""
    if is_time_major(x):
        span = dilation * (weight.shape[-1] - 1) + 1
        outputs = (x.shape[-1] - span) // stride + 1
        if groups == 1 and 0 < outputs <= SHORT_CONV_OUTPUTS:
            windows = x.unfold(2, span, stride)[..., ::dilation]  # [B, C_in, T_out, k]
            cols = windows.permute(0, 2, 1, 3).reshape(x.shape[0], outputs, -1)
            out = torch.matmul(cols, weight.reshape(weight.shape[0], -1).t())  # [B, T_out, C_out]
            return (out + bias if bias is not None else out).transpose(1, 2)
        return F.conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, stride=(1, stride), dilation=(1, dilation),
                        groups=groups).squeeze(2)
    return F.conv1d(x, weight, bias, stride=stride, dilation=dilation, groups=groups)


def time_buffer(head: Tensor | None, x: Tensor, left: int, right: int = 0,
                negative_slope: float | None = None) -> Tensor:
    """[head (or `left` zero frames), x, `right` zero frames] along time, in x's layout; with `negative_slope`, x goes
    through LeakyReLU on the way in.

    A time-major x in inference is written once, straight into the buffer (the activation's output is the buffer):
    the encoder's residual units otherwise spend one full pass per conv on the activation and another on the
    padding or stream-buffer copy."""
    if negative_slope is not None and (torch.is_grad_enabled() or not is_time_major(x)):
        x, negative_slope = F.leaky_relu(x, negative_slope), None
    if head is None and not (left or right or negative_slope is not None):
        return x
    if head is None:
        head = x.new_zeros(*x.shape[:-1], left)
    if negative_slope is None:
        return time_cat([head, x, x.new_zeros(*x.shape[:-1], right)]) if right else time_cat([head, x])
    batch, channels, frames = x.shape
    buf = x.new_empty(batch, head.shape[-1] + frames + right, channels).transpose(1, 2)
    buf[..., :head.shape[-1]] = head
    torch.ops.aten.leaky_relu.out(x, negative_slope, out=buf[..., head.shape[-1]:head.shape[-1] + frames])
    if right:
        buf[..., -right:] = 0
    return buf


def _stream_buffer(module: nn.Module, x: Tensor, state: dict, pad_left: int, replicate: bool,
                   negative_slope: float | None) -> Tensor | None:
    """The not-yet-consumed input of `module` with `x` appended (left padding added on the first call); None while
    replicate padding still waits for its first sample."""
    buf = state.get(module)
    if buf is None and replicate:
        if x.shape[-1] == 0:
            return None
        buf = x[..., :1].expand(*x.shape[:-1], pad_left)
    return time_buffer(buf, x, pad_left, negative_slope=negative_slope)


def stream_conv1d(module: nn.Module, x: Tensor, state: dict, weight: Tensor, bias: Tensor | None, *, stride: int,
                  dilation: int, groups: int, pad_left: int, replicate: bool = False,
                  negative_slope: float | None = None) -> Tensor:
    """One streaming step of a left-padded conv (of LeakyReLU(x) with `negative_slope`): emits every output whose
    receptive field is complete."""
    buf = _stream_buffer(module, x, state, pad_left, replicate, negative_slope)
    if buf is None:
        return x.new_zeros(x.shape[0], weight.shape[0], 0)
    span = dilation * (weight.shape[-1] - 1) + 1
    n_out = (buf.shape[-1] - span) // stride + 1 if buf.shape[-1] >= span else 0
    state[module] = buf[..., n_out * stride:].clone()  # a copy: a view would keep the whole chunk alive
    if n_out == 0:
        return buf.new_zeros(buf.shape[0], weight.shape[0], 0)
    used = buf[..., : (n_out - 1) * stride + span]
    return conv1d(used, weight, bias, stride=stride, dilation=dilation, groups=groups)


def stream_conv_transpose1d(module: nn.Module, x: Tensor, state: dict, weight: Tensor, bias: Tensor | None, *,
                            stride: int, groups: int = 1) -> Tensor:
    """One streaming step of a causal transposed conv (output trimmed to len(x) * stride).

    The last `ceil(k / stride) - 1` input frames are carried, so each output sample is computed by one kernel call
    over the same inputs as offline.
    """
    ctx = -(-weight.shape[-1] // stride) - 1
    prev = state.get(module)
    if prev is None:
        prev = x.new_zeros(*x.shape[:-1], ctx)
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[0], weight.shape[1] * groups, 0)
    z = torch.cat([prev, x], dim=-1)
    state[module] = z[..., z.shape[-1] - ctx:].clone()
    y = F.conv_transpose1d(z, weight, bias, stride=stride, groups=groups)
    return y[..., ctx * stride: (ctx + x.shape[-1]) * stride]


class Conv1d(WeightNormed):
    """Conv1d with causal left padding and an optional `lookahead` of future frames (symmetric part of the pad)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                 dilation: int = 1, lookahead: int = 0, bias: bool = True, weight_norm: bool = True) -> None:
        proto = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, bias=bias)
        super().__init__(proto.weight, proto.bias, weight_norm)
        self.stride, self.dilation, self.lookahead = stride, dilation, lookahead
        self.pad_left = dilation * (kernel_size - 1) - lookahead
        if self.pad_left < 0:
            raise ValueError(f"lookahead {lookahead} exceeds the receptive field of kernel {kernel_size}")

    def forward(self, x: Tensor, negative_slope: float | None = None) -> Tensor:
        """The conv of x, or of LeakyReLU(x) with `negative_slope` (fused with the padding copy; see time_buffer)."""
        x = time_buffer(None, x, self.pad_left, self.lookahead, negative_slope)
        return conv1d(x, self.get_weight(), self.bias, stride=self.stride, dilation=self.dilation)

    def step(self, x: Tensor, state: dict, negative_slope: float | None = None) -> Tensor:
        return stream_conv1d(self, x, state, self.get_weight(), self.bias, stride=self.stride,
                             dilation=self.dilation, groups=1, pad_left=self.pad_left, negative_slope=negative_slope)

    def flush(self, state: dict) -> Tensor:
        """Outputs held back for the lookahead, computed with the zero padding of the true end."""
        buf = state.get(self)
        if buf is None:
            raise RuntimeError("flush() before any step(): nothing was streamed")
        return self.step(buf.new_zeros(*buf.shape[:-1], self.lookahead), state)


class ConvTranspose1d(WeightNormed):
    """Causal transposed conv with kernel = 2 * stride: the overlap into the future is dropped, T -> T * stride.

    Computed as one GEMM (every input frame -> its 2 * stride output samples) plus a one-frame overlap-add: exact,
    and it avoids the slow reference kernel PyTorch picks for short inputs (streaming chunks).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 weight_norm: bool = True) -> None:
        if kernel_size != 2 * stride:
            raise ValueError(f"causal transposed conv needs kernel_size == 2 * stride, got {kernel_size}, {stride}")
        proto = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        super().__init__(proto.weight, proto.bias, weight_norm)
        self.stride = stride

    def _frames(self, x: Tensor) -> Tensor:
        """[B, Cin, T] -> [B, T, Cout, 2, stride]: each frame's contribution to its own and the next output block."""
        w = self.get_weight()
        b, c_in, t = x.shape
        return torch.matmul(x.transpose(1, 2), w.reshape(c_in, -1)).view(b, t, w.shape[1], 2, self.stride)

    def _blocks_to_signal(self, y: Tensor, time_major: bool) -> Tensor:
        b, t, c_out, u = y.shape
        if time_major:  # [B, T, C, u] -> [B, T * u, C] in memory, seen as [B, C, T * u]
            # contiguous(): for one frame the reshape is a view that keeps the channel-major memory
            y = y.permute(0, 1, 3, 2).reshape(b, t * u, c_out).contiguous()
            return (y + self.bias if self.bias is not None else y).transpose(1, 2)
        y = y.permute(0, 2, 1, 3).reshape(b, c_out, t * u)
        return y + self.bias[None, :, None] if self.bias is not None else y

    @staticmethod
    def _overlap_add(p: Tensor, carry: Tensor | None = None) -> Tensor:
        y = p[:, :, :, 0].clone()
        y[:, 1:] += p[:, :-1, :, 1]
        if carry is not None:  # the previous chunk's last frame reaching into this one
            y[:, 0] += carry
        return y

    def forward(self, x: Tensor) -> Tensor:
        return self._blocks_to_signal(self._overlap_add(self._frames(x)), is_time_major(x))

    def step(self, x: Tensor, state: dict) -> Tensor:
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.get_weight().shape[1], 0)
        p = self._frames(x)
        y = self._overlap_add(p, state.get(self))
        state[self] = p[:, -1, :, 1].clone()
        return self._blocks_to_signal(y, is_time_major(x))


def fold_weight_norm(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, WeightNormed):
            m.fold_weight_norm()
    return module


def unfold_weight_norm(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, WeightNormed):
            m.unfold_weight_norm()
    return module
