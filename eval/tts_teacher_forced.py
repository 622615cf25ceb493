"""Teacher-forced TTS: is the flow head's next patch understood when everything before it is the truth?

    python -m eval.tts_teacher_forced --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        --model outputs/demo/unified/final [--split seen] [--limit 12] [--out outputs/tts_teacher_forced.json]
        [--temperature T] [--cfg_strength W] [--steps N] [--aligner DIR]

For each held-out utterance the model sees its true text and true audio; every patch is then sampled by the flow
head from the hidden state before it and the true previous patch (the model's own steps, CFG and temperature), and
the sampled patches are decoded together. Generation errors cannot pile up here, so a high WER means the flow head's
single-patch prediction is the problem; a low one with a high free-running TTS WER means error accumulation is.
Two references on the same items: the true latents (the tokenizer's resynthesis) and every patch replaced by the
previous true one (the true audio delayed by one patch: what a head that only copied its history would make). Also
the mean squared distance of each kind of patch to the true one, in normalised latent units, overall and by frame
within the patch (how far ahead of its history the model still predicts well). A model trained with
`flow.patch_regression_weight` adds a fourth kind: the condition's own guess of each patch. A model that generates
with `generation.blind_history` reads, as in its TTS, only the first 30 % of the audio and then zero patches (its
flow head still gets every true previous patch). Judge: Whisper-base.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .asr_wer import score
from .report import SPLITS, add_corpus_arguments, open_judge_and_model, spread_over_voices, write_json

KINDS = ("flow head", "previous patch", "true latents")


@torch.no_grad()
def teacher_forced_latents(model, text: str, latents: torch.Tensor, generator: torch.Generator | None = None,
                           aligner=None) -> dict[str, torch.Tensor]:
    """Raw latents [T', D] (T' = whole patches of `latents`) for each of KINDS, plus "distances" (MSE per kind). A
    forced text pointer follows the alignment of `aligner` (a CTCAligner) when given, else of the one saved with the
    model, else of the model's own CTC."""
    from holitok_slm.model.dit_head import sample_patch

    options = model.config.generation
    patch = model.config.patch_size
    count = latents.shape[0] // patch
    if count < 2:
        raise ValueError(f"teacher forcing needs at least two patches ({2 * patch} frames), got {latents.shape[0]}")
    item = {"id": "probe", "task": "tts", "text": text, "latents": latents}
    if model.forced_pointer:  # the pointer follows a forced alignment of the true audio
        from holitok_slm.infer.align import align_for_model
        item["text_points"] = align_for_model(model, latents, text, aligner)
    latents = item["latents"] = latents[: count * patch]
    batch = model.collate([item])
    read = batch["latents"]
    if options.blind_history:  # as in its TTS: the backbone reads an opening (30 %) and then only zero patches
        read = read.clone()
        read[:, max(1, int(0.3 * count)) * patch:] = model.latent_bias.to(read.dtype)
    hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"], read, batch["frame_mask"],
                                 batch["audio_offset"], batch["num_patches"], text_points=batch.get("text_points"))
    true, conditions, history, _ = model.flow_inputs(hidden, batch["latents"], batch["frame_mask"],
                                                     batch["audio_offset"], batch["num_patches"], batch["is_tts"])
    frame_text = model.flow_frame_text(batch["input_ids"], batch["audio_offset"], batch["num_patches"],
                                       batch["is_tts"], batch.get("text_points"), batch["latents"].shape[1])
    noise = torch.randn(true.shape, generator=generator, device=true.device) * options.temperature
    sampled = sample_patch(model.dit, conditions, history, noise, options.steps, options.cfg_strength,
                           options.sway_coef, frame_text=frame_text)
    kinds = {"flow head": sampled, "previous patch": history, "true latents": true}
    if model.patch_regressor is not None:  # the condition's own guess (flow.patch_regression_weight)
        kinds["regression"] = model.patch_regressor(conditions).view_as(true)
    out = {name: model.denormalize_latents(x.reshape(1, count * patch, -1))[0] for name, x in kinds.items()}
    # Distances from the second patch on (the first has no true history to copy).
    out["distances"] = {name: float((x[1:] - true[1:]).pow(2).mean()) for name, x in kinds.items()}
    out["distances"]["zero (the mean)"] = float(true[1:].pow(2).mean())
    # The same by frame within the patch (40 ms, 80 ms, ... after the history): how far ahead the model can see.
    out["distances_by_frame"] = {name: (x[1:] - true[1:]).pow(2).mean(dim=(0, 2)).tolist() for name, x in kinds.items()}
    out["distances_by_frame"]["zero (the mean)"] = true[1:].pow(2).mean(dim=(0, 2)).tolist()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser)
    parser.add_argument("--split", choices=sorted(SPLITS), default="seen")
    parser.add_argument("--limit", type=int, default=12, help="utterances, spread over the split's voices")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=None, help="noise scale (default: the checkpoint's)")
    parser.add_argument("--cfg_strength", type=float, default=None, help="CFG strength (default: the checkpoint's)")
    parser.add_argument("--steps", type=int, default=None, help="Euler steps (default: the checkpoint's)")
    parser.add_argument("--aligner", default=None,
                        help="a forced text pointer's alignments from this CTCAligner folder (the one that aligned its "
                             "training store) instead of the one saved with the model (without one: the model's own "
                             "causal CTC)")
    parser.add_argument("--out", default="outputs/tts_teacher_forced.json", help="the results as JSON")
    args = parser.parse_args(argv)

    from data_prep.manifest import read_manifest
    from holitok.audio import load_audio
    judge, pipeline = open_judge_and_model(parser, args)
    model, codec = pipeline.model, pipeline.codec
    if args.aligner and not model.forced_pointer:
        parser.error("--aligner needs a model with a forced text pointer (model.text_pointer_alignment)")
    aligner = None  # align_for_model then takes the one saved with the model, else the model's own CTC
    if args.aligner:
        from holitok_slm.model.ctc_aligner import CTCAligner
        aligner = CTCAligner.from_pretrained(args.aligner)
    for option in ("temperature", "cfg_strength", "steps"):
        if getattr(args, option) is not None:
            setattr(model.config.generation, option, getattr(args, option))
    records = read_manifest(Path(args.corpus) / SPLITS[args.split])
    chosen = spread_over_voices(records, args.limit)
    generator = torch.Generator().manual_seed(args.seed)
    kinds = KINDS + (("regression",) if model.patch_regressor is not None else ())
    refs, hyps = [], {name: [] for name in kinds}
    distances: dict[str, list[float]] = {}
    by_frame: dict[str, list[list[float]]] = {}
    for record in chosen:
        audio = load_audio(record.audio, target_sample_rate=codec.sample_rate)
        latents = codec.encode(audio[None, None])[0].transpose(0, 1)
        result = teacher_forced_latents(model, record.text, latents, generator, aligner)
        refs.append(record.text)
        for name in kinds:
            wav = codec.decode(result[name].transpose(0, 1)[None])[0, 0]
            hyps[name].append(judge.transcribe(wav.numpy(), codec.sample_rate))
        for name, value in result["distances"].items():
            distances.setdefault(name, []).append(value)
        for name, values in result["distances_by_frame"].items():
            by_frame.setdefault(name, []).append(values)
        print(f"{record.id}: {record.text!r} -> flow head {hyps['flow head'][-1]!r}", flush=True)
    options = model.config.generation
    report = {"model": args.model, "split": args.split, "utterances": len(refs), "judge": judge.name,
              "aligner": args.aligner,
              "sampling": {"temperature": options.temperature, "cfg_strength": options.cfg_strength,
                           "steps": options.steps, "sway_coef": options.sway_coef},
              "wer": {name: score(refs, hyps[name]).corpus_wer for name in kinds},
              "mse_to_true_patch": {name: sum(v) / len(v) for name, v in distances.items()},
              "mse_by_frame_in_patch": {name: [sum(col) / len(col) for col in zip(*rows)]
                                        for name, rows in by_frame.items()},
              "items": [{"text": t, **{name: hyps[name][i] for name in kinds}} for i, t in enumerate(refs)]}
    for name in kinds:
        print(f"teacher-forced WER, {name}: {report['wer'][name]:.1%}")
    print("mean squared distance to the true patch (normalised): "
          + ", ".join(f"{k} {v:.3f}" for k, v in report["mse_to_true_patch"].items()))
    print("the same by frame within the patch: " + "; ".join(
        f"{k} " + " ".join(f"{v:.3f}" for v in values) for k, values in report["mse_by_frame_in_patch"].items()))
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
