"""Train the unified AR+DiT model (TTS + ASR, one set of weights) on pre-extracted HoliTok latents.

  accelerate launch train_unified.py --config configs/unified/train_tiny.yaml                  # one process
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train_unified.py --config ...  # CPU DDP
  accelerate launch --multi_gpu --num_processes 8 train_unified.py --config configs/unified/train_base.yaml
  ... --set train.deepspeed_config=configs/deepspeed/zero2.json                                # DeepSpeed ZeRO-2
  ... --resume                      # continue from the newest complete checkpoint in train.output_dir
  ... --resume runs/x/checkpoints/step-00001000

Every process draws its own batches (task ratio, frame budget) from the latent stores; checkpoints hold the model,
optimizer, scheduler, every rank's sampler position and RNG states, so a resumed run repeats exactly the losses an
uninterrupted one would have had. Bad items are skipped and reported at the end (and in bad_items.json); a
non-finite loss skips its step, and `train.max_consecutive_nonfinite` of them in a row stop the run with a
checkpoint and exit code 3. The loop itself is holitok_slm/train/trainer.py (UnifiedTrainer); this file only reads
the command line.
"""
from __future__ import annotations

import argparse
import os
import sys

from holitok_slm.train.config import load_training_run
from holitok_slm.train.trainer import UnifiedTrainer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML with model:, data: and train: sections")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("--resume", nargs="?", const="latest", default=None,
                        help="resume from the newest checkpoint of train.output_dir, or from the given one")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    exit_code = UnifiedTrainer(load_training_run(args.config, args.overrides), resume=args.resume).run()
    sys.stdout.flush()
    sys.stderr.flush()
    return exit_code


if __name__ == "__main__":
    code = main()
    # gloo can abort in its destructor at interpreter exit (seen on CPU runs); everything is flushed by now.
    os._exit(code)
