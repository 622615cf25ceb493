"""Self-continuation TTS: can the model go on speaking a sentence after its own true opening?

    python -m eval.tts_self_continuation --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        --model outputs/demo/unified/final [--split seen] [--limit 8] [--share 0.3] [--temperature T]
        [--cfg_strength W] [--text_cfg_strength W] [--oracle_length] [--oracle_alignment] [--aligner DIR]
        [--out outputs/tts_self_continuation.json] [--picture P.png]

For each held-out utterance the model gets the whole text and, as its audio so far, the true first `share` of the
utterance (the same voice, the same sentence, in-distribution context: no prompt transcript, no second sentence), and
then generates freely until its stop head ends it. The opening and the continuation are decoded together. Next to
eval.tts_teacher_forced (every patch from the true context) and eval.report (a whole sentence after another
utterance's prompt) it tells how far the model's own frames carry it: a model whose teacher-forced speech is
understood and whose continuation is not loses its place on its own output (exposure bias, docs/learning.md section
18). Reference on the same items: the tokenizer's resynthesis of the whole true utterance. Judge: Whisper-base.
A model with a forced text pointer (model.text_pointer_alignment "forced") reads, for the opening, its own forced
alignment of the true utterance, and its pace head from there on; `--oracle_alignment` gives it the true
alignment for the continuation too (how well it speaks when it always knows where in the text it is). `--aligner`
aligns with a CTCAligner (data_prep/train_aligner.py) instead of the model's own CTC: the one its store was aligned with.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .asr_wer import score
from .report import SPLITS, add_corpus_arguments, open_judge_and_model, spectrogram_picture, spread_over_voices, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser)
    parser.add_argument("--split", choices=sorted(SPLITS), default="seen")
    parser.add_argument("--limit", type=int, default=8, help="utterances, spread over the split's voices")
    parser.add_argument("--share", type=float, default=0.3, help="share of each utterance given as its opening")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="noise scale (default: the checkpoint's)")
    parser.add_argument("--cfg_strength", type=float, default=None, help="CFG strength (default: the checkpoint's)")
    parser.add_argument("--text_cfg_strength", type=float, default=None,
                        help="guidance toward the text (default: the checkpoint's; needs flow.text_dropout training)")
    parser.add_argument("--oracle_length", action="store_true",
                        help="tell the model each utterance's true length (its speaking rate for this text) instead "
                             "of the training data's rate: separates the pace of audio_progress / text_pointer from "
                             "the length estimate")
    parser.add_argument("--oracle_alignment", action="store_true",
                        help="a forced text pointer follows the true utterance's forced alignment all the way instead "
                             "of its pace head (separates where it is in the text from what it says there)")
    parser.add_argument("--aligner", default=None,
                        help="a forced text pointer's alignments from this CTCAligner folder (the one that aligned its "
                             "training store) instead of the one saved with the model (without one: the model's own "
                             "causal CTC)")
    parser.add_argument("--out", default="outputs/tts_self_continuation.json", help="the results as JSON")
    parser.add_argument("--picture", default=None,
                        help="also write log-mel spectrograms (PNG) per utterance: original | resynthesis | opening + "
                             "continuation (in the TTS column)")
    args = parser.parse_args(argv)
    if not 0 < args.share < 1:
        parser.error(f"--share must be between 0 and 1, got {args.share}")

    from data_prep.manifest import read_manifest
    from holitok.audio import load_audio
    from holitok_slm.infer.tts import TTSOptions, TTSRequest, generate_latents

    judge, pipeline = open_judge_and_model(parser, args)
    model, codec = pipeline.model, pipeline.codec
    if args.oracle_alignment and not model.forced_pointer:
        parser.error("--oracle_alignment needs a model with a forced text pointer (model.text_pointer_alignment)")
    if args.aligner and not model.forced_pointer:
        parser.error("--aligner needs a model with a forced text pointer (model.text_pointer_alignment)")
    aligner = None  # align_for_model then takes the one saved with the model, else the model's own CTC
    if args.aligner:
        from holitok_slm.model.ctc_aligner import CTCAligner
        aligner = CTCAligner.from_pretrained(args.aligner)
    overrides = {k: getattr(args, k) for k in ("temperature", "cfg_strength", "text_cfg_strength")
                 if getattr(args, k) is not None}
    options = TTSOptions.from_model(model, **overrides)
    patch = model.config.patch_size
    chosen = spread_over_voices(read_manifest(Path(args.corpus) / SPLITS[args.split]), args.limit)
    generator = torch.Generator().manual_seed(args.seed)
    refs, hyps, truths, items, pictures = [], [], [], [], []
    for record in chosen:
        audio = load_audio(record.audio, target_sample_rate=codec.sample_rate)
        latents = codec.encode(audio[None, None])[0].transpose(0, 1)
        opening = max(1, int(args.share * latents.shape[0] / patch)) * patch
        rate = float(model.patches_per_token)
        if args.oracle_length:  # the expected utterance (a prompt without transcript) is then the true one
            model.patches_per_token.fill_(latents.shape[0] / patch / max(1, len(model.text_tokenizer.encode(record.text))))
        points = None
        if model.forced_pointer:  # its own forced alignment of the true utterance: the opening's, or all of it
            from holitok_slm.layout import patch_points
            from holitok_slm.infer.align import align_for_model
            whole = latents.shape[0] // patch
            points = patch_points(align_for_model(model, latents, record.text, aligner), whole, patch)
            points = points if args.oracle_alignment else points[:opening // patch]
        try:
            with torch.no_grad():
                result = generate_latents(model, [TTSRequest(text=record.text, prompt_latents=latents[:opening],
                                                             text_points=points)], options, generator)[0]
        finally:
            model.patches_per_token.fill_(rate)
        spoken = torch.cat([latents[:opening], result.latents])
        refs.append(record.text)
        continued = codec.decode(spoken.transpose(0, 1)[None])[0, 0].numpy()
        resynthesis = codec.decode(latents.transpose(0, 1)[None])[0, 0].numpy()
        hyps.append(judge.transcribe(continued, codec.sample_rate))
        truths.append(judge.transcribe(resynthesis, codec.sample_rate))
        pictures.append((record.speaker or record.id, audio.numpy(), resynthesis, continued))
        items.append({"id": record.id, "text": record.text, "continued": hyps[-1], "resynthesis": truths[-1],
                      "opening_frames": opening, "true_frames": int(latents.shape[0]),
                      "generated_frames": int(result.latents.shape[0]), "stopped_by_eos": bool(result.stopped_by_eos)})
        print(f"{record.id} [{opening}/{latents.shape[0]} frames given, +{result.latents.shape[0]}]: "
              f"{record.text!r} -> {hyps[-1]!r}", flush=True)
    generated = sum(i["generated_frames"] for i in items)
    expected = sum(i["true_frames"] - i["opening_frames"] for i in items)
    report = {"model": args.model, "split": args.split, "utterances": len(refs), "judge": judge.name,
              "share_given": args.share, "oracle_length": args.oracle_length,
              "oracle_alignment": args.oracle_alignment, "aligner": args.aligner,
              "sampling": {"temperature": options.temperature, "cfg_strength": options.cfg_strength,
                           "text_cfg_strength": options.text_cfg_strength, "steps": options.steps},
              "wer": {"continued": score(refs, hyps).corpus_wer, "resynthesis": score(refs, truths).corpus_wer},
              "duration_ratio": generated / max(expected, 1),
              "eos_rate": sum(i["stopped_by_eos"] for i in items) / max(len(items), 1), "items": items}
    print(f"self-continuation WER {report['wer']['continued']:.1%} (resynthesis of the truth "
          f"{report['wer']['resynthesis']:.1%}); continuation length / the truth's {report['duration_ratio']:.2f}")
    write_json(args.out, report)
    if args.picture:
        spectrogram_picture(pictures, codec.sample_rate, Path(args.picture))
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
