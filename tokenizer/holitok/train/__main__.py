"""Entry point: ``accelerate launch -m holitok.train --config configs/tokenizer/stage1.yaml [--set section.key=value ...]``.

Several ``--config`` flags run the stages one after another in the same launch (each stage's ``init_from`` names the
previous stage's ``output_dir``); overrides apply to every stage. Re-running the same command resumes every stage
from its newest checkpoint; finished stages are only re-exported.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .config import load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m holitok.train", description="Train HoliTok stages.")
    parser.add_argument("--config", required=True, action="append",
                        help="stage YAML, e.g. configs/tokenizer/stage1.yaml (repeat to chain stages)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value in every stage, e.g. --set train.max_steps=100 (repeatable)")
    parser.add_argument("legacy_overrides", nargs="*", metavar="KEY=VALUE",
                        help="deprecated spelling of --set KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.legacy_overrides:
        logging.getLogger(__name__).warning(
            "positional overrides are deprecated; write them as --set %s (the same syntax train_unified.py takes)",
            " --set ".join(args.legacy_overrides))
    overrides = args.overrides + args.legacy_overrides
    # Validate every stage before spending time on the first one.
    configs = [load_config(path, overrides) for path in args.config]

    from accelerate.state import AcceleratorState

    from .trainer import StageTrainer

    trainer, exit_code = None, 0
    for index, config in enumerate(configs):
        if index:
            # A new stage may change e.g. mixed precision; keep the process group (PartialState), drop the rest.
            AcceleratorState._reset_state(reset_partial_state=False)
        trainer = StageTrainer(config)
        result = trainer.run()
        if result.exit_code:
            exit_code = result.exit_code  # stopped by non-finite losses: later stages would start from a broken one
            break
        if trainer.accelerator.is_main_process:
            print(f"stage {config.stage} finished at step {result.step}; exported to {result.final_dir}", flush=True)
    distributed = trainer.accelerator.num_processes > 1
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if distributed:
        # gloo sometimes aborts in its destructor after a clean run; everything is flushed and saved at this point.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
