"""Entry point: ``accelerate launch -m holitok.train --config configs/tokenizer/stage1.yaml [section.key=value ...]``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m holitok.train", description="Train one HoliTok stage.")
    parser.add_argument("--config", required=True, help="stage YAML, e.g. configs/tokenizer/stage1.yaml")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=100")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, args.overrides)

    from .trainer import StageTrainer

    trainer = StageTrainer(config)
    result = trainer.run()
    distributed = trainer.accelerator.num_processes > 1
    if trainer.accelerator.is_main_process:
        print(f"stage {config.stage} finished at step {result.step}; exported to {result.final_dir}")
    if distributed:
        # gloo sometimes aborts in its destructor after a clean run; everything is flushed and saved at this point.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
