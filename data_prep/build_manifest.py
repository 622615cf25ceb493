"""Command line: turn a corpus folder into a JSON-lines manifest and report every skipped item.

  python -m data_prep.build_manifest librispeech /data/LibriSpeech/train-clean-100 --out manifests/ls100.jsonl
  python -m data_prep.build_manifest aishell1 /data/data_aishell --split train --out manifests/aishell_train.jsonl
  python -m data_prep.build_manifest emilia /data/Emilia/EN --min_dnsmos 3.0 --out manifests/emilia_en.jsonl
  python -m data_prep.build_manifest common_voice /data/cv-corpus-20.0/en --split train --out manifests/cv_en.jsonl
  python -m data_prep.build_manifest seed_tts_eval /data/seedtts_testset/en --out manifests/seedtts_en.jsonl
  python -m data_prep.build_manifest folder /data/my_voice --language en --task tts --out manifests/mine.jsonl
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_prep.corpora import BUILDERS
from data_prep.manifest import TASKS, write_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("layout", choices=sorted(BUILDERS))
    parser.add_argument("root", help="corpus folder (or the meta.lst file for seed_tts_eval)")
    parser.add_argument("--out", required=True, help="manifest path (.jsonl)")
    parser.add_argument("--split", help="aishell1: train/dev/test; common_voice: the TSV name (train, dev, test, ...)")
    parser.add_argument("--task", choices=TASKS, help="override the layout's default task")
    parser.add_argument("--language", help="folder / seed_tts_eval: language code")
    parser.add_argument("--min_dnsmos", type=float, help="emilia: drop utterances below this DNSMOS")
    parser.add_argument("--skipped_report", help="write skipped items as JSON here (default: <out>.skipped.json)")
    args = parser.parse_args(argv)
    kwargs = {k: v for k, v in {"split": args.split, "task": args.task, "language": args.language,
                                "min_dnsmos": args.min_dnsmos}.items() if v is not None}
    records, skipped = BUILDERS[args.layout](args.root, **kwargs)
    count = write_manifest(records, args.out)
    hours = sum(r.duration or 0.0 for r in records) / 3600
    print(f"wrote {count} items ({hours:.2f} h) to {args.out}; skipped {len(skipped)}")
    if skipped:
        report = Path(args.skipped_report or f"{args.out}.skipped.json")
        report.write_text(json.dumps([{"id": i, "reason": r} for i, r in skipped], indent=1, ensure_ascii=False))
        for item_id, reason in skipped[:20]:
            print(f"  skipped {item_id}: {reason}")
        if len(skipped) > 20:
            print(f"  ... {len(skipped) - 20} more in {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
