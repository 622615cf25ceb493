"""Export a trained stage to the runtime formats: our safetensors directories and the authors' model.pt/semantic.pt.

Layout written under ``<out>``: ``holitok/`` (``HoliTok.save_pretrained``), ``runtime/model.pt`` + ``runtime/config.json``
(authors' layout; only for the waveform decoder head the authors' runtime has), and for Stage III ``semantic/`` (``SemanticModule.save_pretrained``) + ``runtime/semantic.pt``.
Only HoliTok's runtime modules and the semantic Transformer are written: the flow, distillation heads, bridge,
task embeddings, language-model decoder and discriminators are training-only and never exported.

CLI: ``python -m holitok.train.export RUN_OR_FINAL_DIR [--out DIR] [--name HoliTok-Custom]``
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from safetensors.torch import load_file

from ..checkpoint import export_runtime_checkpoint, export_semantic_checkpoint, load_state_dict_strict
from .checkpointing import CONFIG_YAML, TRAIN_STATE, find_stage_dir
from .config import load_config


def export_trained(model, directory: str | Path, model_name: str = "HoliTok") -> Path:
    """``model`` is a TokenizerTrainModel (unwrapped). Returns ``directory``."""
    directory = Path(directory)
    holitok = copy.deepcopy(model.holitok).cpu().float().eval()
    holitok.save_pretrained(directory / "holitok")
    runtime = directory / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    if holitok.config.decoder_head == "waveform":  # the authors' runtime only knows the waveform head
        export_runtime_checkpoint(holitok, runtime / "model.pt", model_name)
        (runtime / "config.json").write_text(json.dumps(holitok.config.to_dict(), indent=1))
    if getattr(model, "stage", 1) == 3:
        semantic = copy.deepcopy(model.supervision.semantic).cpu().float().eval()
        semantic.save_pretrained(directory / "semantic")
        export_semantic_checkpoint(semantic, runtime / "semantic.pt")
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a training output_dir or its final/ directory")
    parser.add_argument("--out", help="where to write (default: the final/ directory itself)")
    parser.add_argument("--name", default="HoliTok", help="model_name stored in model.pt")
    args = parser.parse_args(argv)
    stage_dir = find_stage_dir(args.run)
    if stage_dir is None:
        parser.error(f"{args.run} holds no {TRAIN_STATE} (neither directly nor under final/)")
    from .train_model import TokenizerTrainModel

    config = load_config(stage_dir / CONFIG_YAML)
    state = load_file(str(stage_dir / TRAIN_STATE))
    # Stage III heads are sized by the teachers; read those sizes from the saved tensors instead of loading them.
    dims = None
    if config.distills:
        dims = (state["frame_head.net.4.weight"].shape[0], state["utterance_head.net.2.weight"].shape[0])
    model = TokenizerTrainModel(config, teacher_dims=dims)
    load_state_dict_strict(model, state, str(stage_dir / TRAIN_STATE))
    out = export_trained(model, args.out or stage_dir, args.name)
    print(f"exported to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
