"""Entry point: ``accelerate launch -m holitok.train --config configs/tokenizer/stage1.yaml [section.key=value ...]``.

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
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=100")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Validate every stage before spending time on the first one.
    configs = [load_config(path, args.overrides) for path in args.config]

    from accelerate.state import AcceleratorState

    from .trainer import StageTrainer

    trainer = None
    for index, config in enumerate(configs):
        if index:
            # A new stage may change e.g. mixed precision; keep the process group (PartialState), drop the rest.
            AcceleratorState._reset_state(reset_partial_state=False)
        trainer = StageTrainer(config)
        result = trainer.run()
        if trainer.accelerator.is_main_process:
            print(f"stage {config.stage} finished at step {result.step}; exported to {result.final_dir}", flush=True)
    distributed = trainer.accelerator.num_processes > 1
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if distributed:
        # gloo sometimes aborts in its destructor after a clean run; everything is flushed and saved at this point.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
