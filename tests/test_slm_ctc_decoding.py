"""Joint CTC/attention ASR decoding: the CTC prefix scorer against brute force, and the search following CTC."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from holitok_slm.infer import asr
from holitok_slm.infer.asr import resolve_search, transcribe_latents
from holitok_slm.infer.ctc_prefix import CTCPrefixScorer
from holitok_slm.infer.inputs import InputError
from holitok_slm.tiny import build_tiny_model, randomize_heads, tiny_config

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "hello world"]


def _collapse(path, blank):
    out, previous = [], None
    for label in path:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return tuple(out)


def test_prefix_scores_equal_brute_force():
    torch.manual_seed(0)
    frames, vocab, blank = 5, 3, 0
    log_probs = torch.log_softmax(torch.randn(frames, vocab, dtype=torch.float64), -1)
    totals: dict[tuple, float] = {}  # labelling -> probability, summed over every path of every frame
    for path in itertools.product(range(vocab), repeat=frames):
        labels = _collapse(path, blank)
        totals[labels] = totals.get(labels, 0.0) + float(log_probs[range(frames), list(path)].sum().exp())
    scorer = CTCPrefixScorer(log_probs, blank)
    for hyp in [(1,), (2,), (1, 1), (1, 2), (2, 1, 2), (1, 2, 1), (1, 1, 1)]:
        state = scorer.initial()
        for label in hyp:
            state = scorer.extend(state, torch.tensor([[label]]))
        prefix = sum(p for labels, p in totals.items() if labels[:len(hyp)] == hyp)
        assert float(state.score.exp()) == pytest.approx(prefix, rel=1e-9, abs=1e-12), hyp
        whole = totals.get(hyp, 0.0)
        assert float(scorer.final(state).exp()) == pytest.approx(whole, rel=1e-9, abs=1e-12), hyp
        reference = -F.ctc_loss(log_probs[:, None], torch.tensor([hyp]), torch.tensor([frames]),
                                torch.tensor([len(hyp)]), blank=blank, reduction="sum")
        assert float(scorer.final(state)) == pytest.approx(float(reference), abs=1e-9)


def test_extend_many_at_once_equals_one_by_one():
    torch.manual_seed(1)
    log_probs = torch.log_softmax(torch.randn(12, 6), -1)
    scorer = CTCPrefixScorer(log_probs, blank=5)
    first = scorer.extend(scorer.initial(), torch.tensor([[0, 1, 2]]))  # three hypotheses of one label
    both = scorer.extend(first, torch.tensor([[0, 3], [1, 1], [4, 0]]))  # each extended by two labels
    for row, (a, b) in enumerate([(0, 0), (0, 3), (1, 1), (1, 1), (2, 4), (2, 0)]):
        single = scorer.extend(scorer.extend(scorer.initial(), torch.tensor([[a]])), torch.tensor([[b]]))
        assert torch.allclose(both.score[row], single.score[0])
        assert torch.allclose(both.r_n[row], single.r_n[0]) and torch.allclose(both.r_b[row], single.r_b[0])


def test_blank_and_bad_shapes_are_refused():
    scorer = CTCPrefixScorer(torch.log_softmax(torch.randn(4, 3), -1), blank=0)
    with pytest.raises(ValueError, match="blank"):
        scorer.extend(scorer.initial(), torch.tensor([[0]]))
    with pytest.raises(ValueError, match="non-empty"):
        CTCPrefixScorer(torch.zeros(0, 3), blank=0)


def _model(tmp_path, asr_ctc_weight):
    cfg = tiny_config()
    cfg.flow.asr_ctc_weight = asr_ctc_weight
    torch.manual_seed(0)
    return randomize_heads(build_tiny_model(TEXTS, tmp_path, cfg))


def test_search_defaults_follow_the_training(tmp_path):
    with_ctc, without = _model(tmp_path / "a", 0.5), _model(tmp_path / "b", 0.0)
    assert resolve_search(with_ctc) == asr.JOINT_SEARCH and asr.JOINT_SEARCH[1] > 0
    assert resolve_search(without) == (1, 0.0)
    with_ctc.config.generation.asr_beam_size, with_ctc.config.generation.asr_ctc_weight = 2, 0.0
    assert resolve_search(with_ctc) == (2, 0.0)  # what the checkpoint says wins
    latents = [torch.randn(12, 16)]
    with pytest.raises(InputError, match="never trained"):
        transcribe_latents(without, latents, ctc_weight=0.3)
    with pytest.raises(InputError, match="between 0 and 1"):
        transcribe_latents(with_ctc, latents, ctc_weight=1.5)
    with pytest.raises(InputError, match="beam_size"):
        transcribe_latents(with_ctc, latents, beam_size=0)


def test_joint_search_follows_the_ctc_spelling(tmp_path, monkeypatch):
    """An untrained decoder writes arbitrary text; with the CTC score weighted in, the search must write what the
    (here: given) CTC output spells, and with weight 0 it must not depend on it."""
    model = _model(tmp_path, 0.5)
    tok = model.text_tokenizer
    target = tok.encode("hello world")
    latents = [torch.randn(24, 16, generator=torch.Generator().manual_seed(3))]  # 6 patches: 6 CTC steps
    vocab = model.backbone.text_logits(torch.zeros(1, model.config.backbone.hidden_size)).shape[-1]
    spelled = torch.full((6, vocab), -12.0)
    spelled[:, model.ctc_blank_id()] = -0.01
    for step, token in zip((0, 2, 4), target):  # each token on its own step, blanks around
        spelled[step] = -12.0
        spelled[step, token] = -0.01
    monkeypatch.setattr(type(model), "ctc_log_probs", lambda self, states: spelled[None].clone())
    monkeypatch.setattr(asr, "CTC_PRE_BEAM", vocab)  # every token is a candidate: CTC alone can steer
    decoder_only = transcribe_latents(model, latents, beam_size=3, ctc_weight=0.0)
    assert decoder_only != ["hello world"]
    assert transcribe_latents(model, latents, beam_size=3, ctc_weight=0.9) == ["hello world"]
    assert transcribe_latents(model, latents, beam_size=1, ctc_weight=0.9) == ["hello world"]
    spelled.fill_(-12.0)
    spelled[:, model.ctc_blank_id()] = -0.01  # CTC hears nothing: the joint search ends at once
    assert transcribe_latents(model, latents, beam_size=3, ctc_weight=0.9) == [""]
