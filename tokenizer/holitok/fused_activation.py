"""The decoder's anti-aliased SnakeBeta (x2 upsample -> SnakeBeta -> x2 downsample) as one fused CPU kernel.

Why: profiled on HoliTok-Base (decode, 1 thread), `Activation1d` took ~47 % of the time: a transposed depthwise conv
on PyTorch's slow path, a replicate-pad copy and five element-wise passes over the x2 signal. This kernel computes the
same function on the time-major tensors that CPU inference uses (holitok/layers.py) in cache-sized time blocks and
16-channel SIMD slices, in polyphase form (the even and odd output samples of the upsampler are two 6-tap filters
over the input, and the downsampler is two 6-tap filters over those phases), with sin^2 from a range-reduced
polynomial that vectorises. Equal to the eager path within float rounding (tests/test_tokenizer_fused.py compares them
offline and streamed); the golden and streaming tests run through it.

It is compiled on first use with the C++ compiler (`torch.utils.cpp_extension.load_inline`, cached by torch). It is
used only for inference (no autograd graph) on float32 CPU tensors; training keeps the eager modules. If it cannot be
built, a warning says why and the eager path is used; `HOLITOK_FAST_CPU=0` turns it off (holitok/layers.py).
"""
from __future__ import annotations

import os
import threading
import warnings

import torch
from torch import Tensor

from .layers import FAST_CPU_SWITCH, fast_cpu_enabled, is_time_major

X_HISTORY = 5   # input samples the causal x2 upsampler (12 taps) still needs from before a chunk
U_HISTORY = 6   # samples of each phase of the SnakeBeta output the downsampler (12 taps, stride 2) still needs

_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cstring>
#include <vector>

// sin(r)^2 for |r| < ~1e4: r = k*pi + t with |t| <= pi/2 (three-part pi, Cody-Waite), sin^2 is pi-periodic so the
// sign of sin(t) does not matter; odd Taylor polynomial to t^13 (truncation error < 1e-9 on |t| <= pi/2).
#pragma omp declare simd notinbranch
static inline float sin_sq(float r) {
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to the nearest integer
  float k = (r * 0.31830988618379067f + shifter) - shifter;
  float t = r - k * 3.140625f;
  t = t - k * 0.0009675025939941406f;
  t = t - k * 1.5099580252808664e-07f;
  float t2 = t * t;
  float p = 1.6059043836821613e-10f;               // 1/13!
  p = p * t2 - 2.505210838544172e-08f;             // -1/11!
  p = p * t2 + 2.7557319223985893e-06f;            // 1/9!
  p = p * t2 - 0.0001984126984126984f;             // -1/7!
  p = p * t2 + 0.008333333333333333f;              // 1/5!
  p = p * t2 - 0.16666666666666666f;               // -1/3!
  float s = t + t * t2 * p;
  return s * s;
}

// x [B, T, C] (time-major), x_hist [B, 5, C] (the last input samples), u_hist [B, 12, C] (the last 6 samples of the
// even then the odd output phase; ignored when !u_hist_valid: the true start, where the downsampler's left padding
// repeats the first output sample), up_f / down_f [C, 12], alpha = exp(log alpha) [C], inv_beta [C]. Work is split into (item, 16-channel slice) tasks; the inner loops run over the
// slice's 16 lanes, contiguous in memory, as SIMD loops.
std::vector<at::Tensor> snake_aa_nwc(at::Tensor x, at::Tensor x_hist, at::Tensor u_hist, bool u_hist_valid,
                                     at::Tensor up_f, at::Tensor down_f, at::Tensor alpha, at::Tensor inv_beta) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  auto out = at::empty_like(x);
  auto new_x_hist = at::empty({B, 5, C}, x.options());
  auto new_u_hist = at::empty({B, 12, C}, x.options());
  const float *px = x.data_ptr<float>(), *pxh = x_hist.data_ptr<float>(), *puh = u_hist.data_ptr<float>();
  const float *pf = up_f.data_ptr<float>(), *pg = down_f.data_ptr<float>();
  const float *pa = alpha.data_ptr<float>(), *pb = inv_beta.data_ptr<float>();
  float *po = out.data_ptr<float>(), *pnx = new_x_hist.data_ptr<float>(), *pnu = new_u_hist.data_ptr<float>();
  std::vector<float> FE(6 * C), FO(6 * C), GE(6 * C), GO(6 * C);
  for (int64_t c = 0; c < C; ++c) {
    for (int i = 0; i < 6; ++i) {
      FE[i * C + c] = 2.0f * pf[c * 12 + 2 * i];
      FO[i * C + c] = 2.0f * pf[c * 12 + 2 * i + 1];
      GE[i * C + c] = pg[c * 12 + 2 * i + 1];
      GO[i * C + c] = pg[c * 12 + 2 * i];
    }
  }
  const int64_t slices = (C + 15) / 16;
  at::parallel_for(0, B * slices, 1, [&](int64_t begin, int64_t end) {
    const int64_t BS = 256;
    // 16 lanes per row whatever the slice width: fixed trip counts let the compiler vectorise; unused lanes are 0.
    std::vector<float> xbuf((5 + BS) * 16, 0.0f), ebuf((6 + BS) * 16, 0.0f), obuf((6 + BS) * 16, 0.0f);
    float* __restrict__ xe = xbuf.data();
    float* __restrict__ ue = ebuf.data();
    float* __restrict__ uo = obuf.data();
    alignas(64) float fe[6][16], fo[6][16], ge[6][16], go[6][16], a[16], ib[16], z[16];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / slices, c0 = (task % slices) * 16, w = std::min<int64_t>(16, C - c0);
      for (int c = 0; c < 16; ++c) {
        const bool on = c < w;
        for (int i = 0; i < 6; ++i) {
          fe[i][c] = on ? FE[i * C + c0 + c] : 0.0f;
          fo[i][c] = on ? FO[i * C + c0 + c] : 0.0f;
          ge[i][c] = on ? GE[i * C + c0 + c] : 0.0f;
          go[i][c] = on ? GO[i * C + c0 + c] : 0.0f;
        }
        a[c] = on ? pa[c0 + c] : 0.0f;
        ib[c] = on ? pb[c0 + c] : 0.0f;
      }
      for (int r = 0; r < 5; ++r) std::memcpy(xe + r * 16, pxh + (b * 5 + r) * C + c0, w * sizeof(float));
      bool replicate = !u_hist_valid;
      if (u_hist_valid) {
        for (int r = 0; r < 6; ++r) {
          std::memcpy(ue + r * 16, puh + (b * 12 + r) * C + c0, w * sizeof(float));
          std::memcpy(uo + r * 16, puh + (b * 12 + 6 + r) * C + c0, w * sizeof(float));
        }
      }
      for (int64_t j0 = 0; j0 < T; j0 += BS) {
        const int64_t n = std::min(BS, T - j0);
        for (int64_t j = 0; j < n; ++j)
          std::memcpy(xe + (5 + j) * 16, px + (b * T + j0 + j) * C + c0, w * sizeof(float));
        for (int64_t j = 0; j < n; ++j) {
          const float* xr = xe + j * 16;  // rows j..j+5 hold x[j-5..j]
          float* er = ue + (6 + j) * 16;
          float* orow = uo + (6 + j) * 16;
#pragma omp simd
          for (int c = 0; c < 16; ++c) {
            float ae = 0.0f, ao = 0.0f;
            for (int i = 0; i < 6; ++i) {
              const float v = xr[(5 - i) * 16 + c];
              ae += fe[i][c] * v;
              ao += fo[i][c] * v;
            }
            er[c] = ae + sin_sq(a[c] * ae) * ib[c];
            orow[c] = ao + sin_sq(a[c] * ao) * ib[c];
          }
        }
        if (replicate) {
          for (int r = 0; r < 6; ++r) {
            std::memcpy(ue + r * 16, ue + 6 * 16, 16 * sizeof(float));
            std::memcpy(uo + r * 16, ue + 6 * 16, 16 * sizeof(float));
          }
          replicate = false;
        }
        for (int64_t j = 0; j < n; ++j) {
#pragma omp simd
          for (int c = 0; c < 16; ++c) {
            float acc = 0.0f;
            for (int i = 0; i < 6; ++i) acc += ge[i][c] * ue[(j + i + 1) * 16 + c] + go[i][c] * uo[(j + i) * 16 + c];
            z[c] = acc;
          }
          std::memcpy(po + (b * T + j0 + j) * C + c0, z, w * sizeof(float));
        }
        std::memmove(xe, xe + n * 16, 5 * 16 * sizeof(float));
        std::memmove(ue, ue + n * 16, 6 * 16 * sizeof(float));
        std::memmove(uo, uo + n * 16, 6 * 16 * sizeof(float));
      }
      for (int r = 0; r < 5; ++r) std::memcpy(pnx + (b * 5 + r) * C + c0, xe + r * 16, w * sizeof(float));
      for (int r = 0; r < 6; ++r) {
        if (replicate) {
          std::memset(pnu + (b * 12 + r) * C + c0, 0, w * sizeof(float));
          std::memset(pnu + (b * 12 + 6 + r) * C + c0, 0, w * sizeof(float));
        } else {
          std::memcpy(pnu + (b * 12 + r) * C + c0, ue + r * 16, w * sizeof(float));
          std::memcpy(pnu + (b * 12 + 6 + r) * C + c0, uo + r * 16, w * sizeof(float));
        }
      }
    }
  });
  return {out, new_x_hist, new_u_hist};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("snake_aa_nwc", &snake_aa_nwc, "fused anti-aliased SnakeBeta"); }
"""

_lock = threading.Lock()
_state: dict = {}


def _build():
    from torch.utils.cpp_extension import load_inline
    flags = ["-O3", "-march=native"] if os.uname().machine in ("x86_64", "AMD64") else ["-O3"]
    return load_inline(name="holitok_fused_activation_v4", cpp_sources=[_CPP], extra_cflags=flags + ["-fopenmp"],
                       extra_ldflags=["-fopenmp"], with_cuda=False, verbose=False)


def kernel():
    """The compiled module, or None (disabled by the environment, or the build failed: warned once with the reason)."""
    if not fast_cpu_enabled():
        return None
    if "module" in _state:  # built (or failed) already: no lock on the hot path
        return _state["module"]
    with _lock:
        if "module" not in _state:
            try:
                _state["module"] = _build()
            except Exception as err:  # no compiler / headers: say so once, then run the eager modules
                _state["module"] = None
                warnings.warn(f"holitok: the fused SnakeBeta kernel could not be built ({type(err).__name__}: "
                              f"{str(err).strip().splitlines()[-1] if str(err).strip() else ''}); decoding uses "
                              f"the slower eager path. Set {FAST_CPU_SWITCH}=0 to silence this.", RuntimeWarning)
        return _state["module"]


def usable(x: Tensor, *params: Tensor) -> bool:
    """Inference on float32 CPU tensors only: the kernel has no backward."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return False
    return kernel() is not None


def run(x: Tensor, up_filter: Tensor, down_filter: Tensor, log_alpha: Tensor, log_beta: Tensor,
        history: tuple[Tensor, Tensor] | None) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
    """x [B, C, T] -> (out [B, C, T] in x's layout, new history). `history` None = the true start (zeros in,
    replicate pad out).

    The history is (last 5 input samples [B, C, 5], last 6 samples of each output phase [B, C, 12]); it stays None
    while no sample has arrived, as the eager path waits for a first sample before it can replicate-pad.
    """
    b, c, t = x.shape
    if t == 0:
        return x.new_zeros(b, c, 0), history
    valid = history is not None
    x_hist, u_hist = history if valid else (x.new_zeros(b, c, X_HISTORY), x.new_zeros(b, c, 2 * U_HISTORY))
    filters = (up_filter.detach().reshape(-1, 12).expand(c, 12).contiguous(),
               down_filter.detach().reshape(-1, 12).expand(c, 12).contiguous(), log_alpha.detach().exp().contiguous(),
               (1.0 / (log_beta.detach().exp() + 1e-9)).contiguous())
    # [B, T, C] rows for the kernel: a view of a time-major x, one copy of a channel-major one
    time_major = is_time_major(x)
    out, x_hist, u_hist = kernel().snake_aa_nwc(x.detach().transpose(1, 2).contiguous(),
                                                x_hist.transpose(1, 2).contiguous(),
                                                u_hist.transpose(1, 2).contiguous(), valid, *filters)
    out = out.transpose(1, 2)
    return (out if time_major else out.contiguous()), (x_hist.transpose(1, 2), u_hist.transpose(1, 2))
