"""CTC prefix scores for joint CTC/attention ASR decoding: how well each extended hypothesis fits the audio.

The model's auxiliary ASR CTC (`flow.asr_ctc_weight`) spells the transcript over the audio positions. Its prefix
probability psi(h) is the total probability of all CTC paths whose labelling starts with h (Watanabe et al. 2017,
"Hybrid CTC/attention"); a hypothesis the text prior likes but the audio does not contain scores low, so beam search
weighing it in stays on what was said. The time recursions of one extension are linear in probability space, so they
are computed for all times at once with cumulative sums and `logcumsumexp` instead of a loop over frames.

State of a hypothesis h: r_n[t], r_b[t] (log probability that frames 1..t emit exactly h, the last frame non-blank /
blank), t = 0..T with t = 0 before the first frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class PrefixState:
    """r_n, r_b [N, T + 1] for N hypotheses, their last label [N] (-1 for the empty one) and log psi [N]."""

    r_n: torch.Tensor
    r_b: torch.Tensor
    last: torch.Tensor
    score: torch.Tensor

    def select(self, rows: torch.Tensor) -> "PrefixState":
        return PrefixState(self.r_n[rows], self.r_b[rows], self.last[rows], self.score[rows])


class CTCPrefixScorer:
    """Prefix scores over one utterance's CTC log-probabilities [T, V] (float64 inside: the cumulative sums reach
    thousands of nats)."""

    def __init__(self, log_probs: torch.Tensor, blank: int):
        if log_probs.dim() != 2 or log_probs.shape[0] == 0:
            raise ValueError(f"CTC log-probabilities must be a non-empty [T, V] tensor, got {tuple(log_probs.shape)}")
        self.x = log_probs.double()
        self.blank = blank
        zero = self.x.new_zeros(1, self.x.shape[1])
        # Cumulative log-probabilities with a leading 0 for t = 0: sums of x over frames a+1..b are cum[b] - cum[a].
        self.cum = torch.cat([zero, self.x.cumsum(0)], 0)  # [T + 1, V]
        self.cum_blank = self.cum[:, blank]                  # [T + 1]

    @property
    def frames(self) -> int:
        return self.x.shape[0]

    def initial(self) -> PrefixState:
        """The empty hypothesis: only blanks so far (r_b[t] = sum of blank log-probs up to t), psi = 1."""
        r_b = self.cum_blank[None].clone()
        r_n = torch.full_like(r_b, NEG_INF)
        return PrefixState(r_n, r_b, torch.tensor([-1], device=self.x.device), self.x.new_zeros(1))

    def extend(self, state: PrefixState, labels: torch.Tensor) -> PrefixState:
        """Every hypothesis of `state` [N] extended by each of its labels [N, K] (none of them blank) -> the N*K
        extended hypotheses' states, row-major (hypothesis i's k-th extension is row i*K + k)."""
        n, k = labels.shape
        if bool((labels == self.blank).any()):
            raise ValueError("a CTC hypothesis cannot be extended by the blank label")
        flat = labels.reshape(-1)
        r_n_g = state.r_n.repeat_interleave(k, 0)   # [N*K, T+1]
        r_b_g = state.r_b.repeat_interleave(k, 0)
        same = (state.last.repeat_interleave(k, 0) == flat)[:, None]
        # phi[t]: h can be emitted by frame t and the new label starts at frame t+1 (after a blank, or after a
        # different label; a repeated label needs a blank in between).
        phi = torch.where(same, r_b_g, torch.logaddexp(r_b_g, r_n_g))[:, :-1]  # phi[t] for t = 0..T-1
        cum_c = self.cum[:, flat].T                     # [N*K, T+1]: cumulative log x(c)
        # r_n[t] = log sum_{tau=1..t} exp(phi[tau-1] + sum_{s=tau..t} x_s(c))
        r_n = torch.full_like(r_n_g, NEG_INF)
        r_n[:, 1:] = cum_c[:, 1:] + torch.logcumsumexp(phi - cum_c[:, :-1], dim=1)
        # r_b[t] = log sum_{tau=1..t} exp(r_n[tau-1] + sum_{s=tau..t} x_s(blank))
        r_b = torch.full_like(r_n_g, NEG_INF)
        r_b[:, 1:] = self.cum_blank[None, 1:] + torch.logcumsumexp(r_n[:, :-1] - self.cum_blank[None, :-1], dim=1)
        # psi(h + c) = log sum_t exp(phi[t-1] + x_t(c)): paths that emit c at frame t and anything after it.
        score = torch.logsumexp(phi + self.x[:, flat].T, dim=1)
        return PrefixState(r_n, r_b, flat, score)

    def final(self, state: PrefixState) -> torch.Tensor:
        """log p(h | audio) of each hypothesis taken as the whole transcript [N]."""
        return torch.logaddexp(state.r_n[:, -1], state.r_b[:, -1])
