"""TTS decoding sweep: the listener judges' WER / SIM / EOS / duration for each setting of a grid of TTS options.

    python -m eval.tts_sweep --corpus outputs/demo/corpus --tokenizer outputs/demo/tokenizer \
        --model outputs/demo/unified/final --grid temperature=0.5,0.7,1.0 cfg_strength=1.5,2.0,3.0 \
        [--splits unseen] [--per_voice 3] [--per_unseen_voice 6] [--skip_first 4 11] [--out outputs/tts_sweep]

Every setting synthesises the same items with the same seeds (eval/report.py's selection and prompts), so the rows
differ only by the options. The winner can be stored as the model's default with `model.generation.<option>` in the
training config. Writes sweep.json and sweep.md after every setting (`"complete": false` until the last).
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from .report import SPLITS, add_corpus_arguments, build_report

SWEEPABLE = {"temperature": float, "cfg_strength": float, "text_cfg_strength": float, "steps": int, "sway_coef": float,
             "eos_threshold": float, "prompt_trailing_silence_db": float}


def parse_grid(items: list[str]) -> dict[str, list]:
    """["temperature=0.5,0.7", "steps=10"] -> {"temperature": [0.5, 0.7], "steps": [10]}; unknown names refused."""
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        if name not in SWEEPABLE or not values:
            raise ValueError(f"--grid takes NAME=V1,V2,... with NAME in {sorted(SWEEPABLE)}; got {item!r}")
        grid[name] = [SWEEPABLE[name](v) for v in values.split(",")]
    return grid


def settings(grid: dict[str, list]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def _fmt(value, pct: bool = False) -> str:
    return "-" if value is None else (f"{value:.1%}" if pct else f"{value:.3f}")


def format_table(rows: list[dict]) -> str:
    lines = ["| setting | split | TTS WER | TTS SIM | EOS | duration ratio |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        label = ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "(model defaults)"
        for split, tts in row["tts"].items():
            lines.append(f"| {label} | {split} | {_fmt(tts.get('wer'), True)} | {_fmt(tts.get('sim'))} | "
                         f"{_fmt(tts.get('eos_rate'), True)} | {_fmt(tts.get('duration_ratio'))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_corpus_arguments(parser)
    parser.add_argument("--grid", nargs="+", required=True, help="NAME=V1,V2,... (options of TTSOptions)")
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--per_voice", type=int, default=2)
    parser.add_argument("--per_unseen_voice", type=int)
    parser.add_argument("--sim_judge", default="resemblyzer")
    parser.add_argument("--skip_first", type=int, nargs="+", default=[0], metavar=("N", "M"),
                        help="pass over each training voice's first N test utterances and each held-out voice's first M "
                             "(default N); with the report's --per_voice P and --per_unseen_voice U, P+1 U+1 leaves out "
                             "every utterance the report scores or prompts with, so settings are not chosen on its items")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/tts_sweep")
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
    except ValueError as err:
        parser.error(str(err))
    if len(args.skip_first) > 2 or min(args.skip_first) < 0:
        parser.error("--skip_first takes one or two counts >= 0")
    skip = {"seen": args.skip_first[0], "unseen": args.skip_first[-1]}
    splits = tuple(s for s in args.splits.split(",") if s)
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        parser.error(f"--splits: unknown {unknown}; choose from {list(SPLITS)}")

    from holitok_slm.infer.pipeline import SpeechPipeline

    from .audio_metrics import MissingJudgeError
    from .judges import make_asr_judge, make_speaker_judge

    try:
        asr_judge, sim_judge = make_asr_judge(args.asr_judge), make_speaker_judge(args.sim_judge)
    except MissingJudgeError as err:
        parser.exit(2, f"eval.tts_sweep: {err}\n")
    pipeline = SpeechPipeline.from_pretrained(args.model, args.tokenizer)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, grid_settings = [], settings(grid)
    for options in grid_settings:
        started = time.time()
        report, _ = build_report(args.corpus, pipeline.codec, pipeline, asr_judge, sim_judge, ("tts",),
                                 args.per_voice, args.seed, progress=False, per_unseen_voice=args.per_unseen_voice,
                                 splits=splits, tts_options=options, skip=skip)
        tts = {split: block["all"].get("tts", {}) for split, block in report["splits"].items()}
        rows.append({"options": options, "tts": tts, "seconds": round(time.time() - started, 1)})
        print("\n".join(format_table(rows[-1:]).splitlines()[2:]), f"({rows[-1]['seconds']} s)", flush=True)
        # Written after every setting: a sweep stopped early keeps the rows it finished.
        (out / "sweep.json").write_text(json.dumps({"model": args.model, "tokenizer": args.tokenizer, "grid": grid,
                                                    "per_voice": args.per_voice, "skip_first": skip, "rows": rows,
                                                    "complete": len(rows) == len(grid_settings)}, indent=1))
        (out / "sweep.md").write_text(format_table(rows))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
