"""Per-step TTS cost against context length, with and without the LLM KV cache (prints times and ratios).

Each AR step = one backbone step (cached: 1 new position; recompute: the whole context) + DiT sampling
(NFE x batched CFG) + embedding the new patch. Only the backbone part depends on the context, so it is
timed per context length; the DiT and patch-embedding parts are timed once and added for the full step.
`--e2e` additionally times real `stream_patches` generation (both modes) and prints measured step times.

    python bench/tts_speed.py                                   # paper-size Base on CPU (random weights)
    python bench/tts_speed.py --config configs/unified/model_tiny.yaml --e2e
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from holitok_slm.config import load_unified_config
from holitok_slm.model.dit_head import sample_patch
from holitok_slm.model.unified import UnifiedModel

PATCH_RATE_HZ = 6.25


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def component_table(model: UnifiedModel, seconds: list[float], text_tokens: int, nfe: int, repeats: int) -> None:
    cfg = model.config
    width = model.backbone.hidden_size
    g = torch.Generator().manual_seed(0)
    patch = torch.randn(1, cfg.patch_size, cfg.latent_dim, generator=g)
    condition = torch.randn(1, cfg.dit.hidden_size, generator=g)
    dit_time = _timed(lambda: sample_patch(model.dit, condition, patch, patch, steps=nfe, cfg_strength=2.0), repeats)
    if model.patch_encoder is not None:
        embed_time = _timed(lambda: model.patch_encoder(patch), repeats)
    else:
        cache = model.semantic_input.init_cache()
        embed_time = _timed(lambda: model.semantic_input.step(patch, cache), repeats)
    print(f"DiT sampling per step ({nfe} NFE, batched CFG): {dit_time * 1e3:.1f} ms; "
          f"patch embedding: {embed_time * 1e3:.1f} ms")
    print(f"{'output s':>8} {'context':>8} | {'LLM cached ms':>13} {'LLM recompute ms':>16} {'ratio':>6} | "
          f"{'step cached ms':>14} {'step recompute ms':>17} {'ratio':>6}")
    summary = None
    for sec in seconds:
        length = text_tokens + 2 + int(round(sec * PATCH_RATE_HZ))
        embeds = torch.randn(1, length, width, generator=g)
        mask = torch.ones(1, length, dtype=torch.long)
        positions = torch.arange(length)[None]
        cache = model.backbone.new_cache()
        model.backbone(embeds[:, :-1], mask[:, :-1], positions[:, :-1], cache)

        def cached_step():
            model.backbone(embeds[:, -1:], mask, positions[:, -1:], cache)
            cache.crop(-1)  # back to length - 1 cached positions for the next repeat

        cached = _timed(cached_step, repeats)
        recompute = _timed(lambda: model.backbone(embeds, mask, positions), repeats)
        fixed = dit_time + embed_time
        summary = (sec, recompute / cached, (recompute + fixed) / (cached + fixed))
        print(f"{sec:>8.1f} {length:>8d} | {cached * 1e3:>13.1f} {recompute * 1e3:>16.1f} {recompute / cached:>5.1f}x | "
              f"{(cached + fixed) * 1e3:>14.1f} {(recompute + fixed) * 1e3:>17.1f} {(recompute + fixed) / (cached + fixed):>5.1f}x")
    sec, backbone_ratio, step_ratio = summary
    verdict = "meets" if backbone_ratio >= 5 else "MISSES"
    print(f"At {sec:.0f} s of output the cached backbone step is {backbone_ratio:.1f}x faster than recompute "
          f"({verdict} the >= 5x target); the whole step (with the context-independent DiT sampling) is "
          f"{step_ratio:.1f}x faster.")


def e2e_table(model: UnifiedModel, seconds: float, nfe: int) -> None:
    from holitok_slm.infer.tts import TTSOptions, TTSRequest, stream_patches
    from holitok_slm.text_tokenizer import TextTokenizer

    text = "the quick brown fox jumps over the lazy dog " * 3
    if model.text_tokenizer is None and model.config.text_tokenizer.kind == "sentencepiece" and not model.config.text_tokenizer.path:
        import tempfile

        from holitok_slm.text_tokenizer import train_sentencepiece
        model.text_tokenizer = train_sentencepiece([text], Path(tempfile.mkdtemp()) / "spm.model")
    elif model.text_tokenizer is None:
        model.text_tokenizer = TextTokenizer.build(model.config.text_tokenizer)
    if len(model.text_tokenizer) > model.backbone.lm.config.vocab_size:
        raise ValueError("the text tokenizer is larger than the model vocabulary")
    patches = int(round(seconds * PATCH_RATE_HZ))
    marks = sorted({1, patches // 4, patches // 2, patches})
    print(f"\nEnd to end: {patches} patches ({seconds:.0f} s), measured time of AR step k")
    rows = {}
    for use_cache in (True, False):
        options = TTSOptions.from_model(model, steps=nfe, min_patches=patches, max_patches=patches, use_cache=use_cache)
        times, start = [], time.perf_counter()
        for _ in stream_patches(model, [TTSRequest(text)], options,
                                torch.Generator().manual_seed(0)):
            now = time.perf_counter()
            times.append(now - start)
            start = now
        rows[use_cache] = times
    print(f"{'step':>6} {'cached ms':>10} {'recompute ms':>13} {'ratio':>6}")
    for k in marks:
        c, r = rows[True][k - 1], rows[False][k - 1]
        print(f"{k:>6} {c * 1e3:>10.1f} {r * 1e3:>13.1f} {r / c:>5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/unified/model_base.yaml")
    parser.add_argument("--seconds", type=float, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--text-tokens", type=int, default=60, help="prompt + target text tokens before the audio")
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--e2e", action="store_true", help="also time real generation in both modes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_unified_config(args.config)
    if cfg.backbone.vocab_size is None:
        cfg.backbone.vocab_size = 512
    model = UnifiedModel(cfg, text_tokenizer=None).eval()
    print(f"{args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"{args.threads} threads, fp32, {'GPU' if torch.cuda.is_available() else 'CPU'} (weights random)")
    component_table(model, args.seconds, args.text_tokens, args.nfe, args.repeats)
    if args.e2e:
        e2e_table(model, max(args.seconds), args.nfe)


if __name__ == "__main__":
    main()
