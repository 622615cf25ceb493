"""Stage hand-over: the ``final/`` folder between stages, initialisation from a previous stage, and the check that a
resumed stage still starts from the same weights (checkpoint folders themselves: run_state.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import CheckpointError, file_sha256, load_holitok, load_state_dict_strict
from ..harmonic_head import HarmonicISTFTHead, add_harmonic_branch
from ..model import HoliTok
from .config import TokenizerTrainConfig, load_config, save_config
from .run_state import read_trainer_state

logger = logging.getLogger(__name__)
TRAIN_STATE = "train_state.safetensors"  # the whole TokenizerTrainModel (HoliTok + flow/heads/supervision)
DISCRIMINATOR_STATE = "discriminators.safetensors"
CONFIG_YAML = "config.yaml"


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # Cloning gives tied weights (e.g. a decoder's embeddings/lm_head) separate storage, which safetensors requires.
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_stage_state(model: torch.nn.Module, discriminators: torch.nn.Module, config: TokenizerTrainConfig,
                     directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(model), str(directory / TRAIN_STATE))
    save_file(_tensors(discriminators), str(directory / DISCRIMINATOR_STATE))
    save_config(config, directory / CONFIG_YAML)


def find_stage_dir(path: str | Path) -> Path | None:
    """``path`` or ``path/final`` if it holds a stage hand-over (train_state.safetensors), else None."""
    path = Path(path)
    for candidate in (path / "final", path):
        if (candidate / TRAIN_STATE).is_file():
            return candidate
    return None


def _load_child(child: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str, source: str,
                notes: list[str], source_phase: str) -> bool:
    part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        return False
    if isinstance(child, HoliTok):
        _widen(child, part, source, notes, source_phase)
    load_state_dict_strict(child, part, f"{source} [{prefix}*]")
    return True


def _widen(model: HoliTok, state: dict[str, torch.Tensor], source: str, notes: list[str],
           source_phase: str) -> None:
    """The changes of architecture a stage may start from, each noted: an istft head's weights into a harmonic head,
    modules that start at zero (the front end's long window, the head's branch) added where `state` predates them,
    and an absolute-phase head turned into a summed-advance one (`source_phase`: the checkpoint's istft_phase)."""
    head = getattr(model.decoder, "head", None)
    if getattr(head, "phase", "absolute") == "advance" and source_phase == "absolute":
        # The phase rows meant absolute phases; as deviations they would detune every bin. Zeroed, each bin starts
        # at its centre frequency and the magnitudes stay as trained.
        for key in ("decoder.head.proj.weight_g", "decoder.head.proj.weight", "decoder.head.proj.bias"):
            if key in state:
                state[key] = state[key].clone()
                state[key][head.bins:] = 0
        notes.append(f"decoder.head.proj's phase rows zeroed: {source} reads absolute phases, this head sums "
                     f"advances (istft_head.py)")
    if isinstance(head, HarmonicISTFTHead) and add_harmonic_branch(state, head, "decoder.head."):
        notes.append(f"decoder.head.harmonic_proj added to the istft head of {source} (harmonic_head.py: gains from "
                     f"its magnitudes, F0 and voicing freshly initialised)")
    for name, module in model.named_modules():
        if not getattr(module, "zero_init", False):
            continue
        missing = {f"{name}.{key}": value.detach().clone() for key, value in module.state_dict().items()
                   if f"{name}.{key}" not in state}
        if missing and not any(key.startswith(name + ".") for key in state):
            state.update(missing)
            notes.append(f"{name} added at zero (not in {source})")


def initialise_from(path: str | Path, model: torch.nn.Module, discriminators: torch.nn.Module) -> list[str]:
    """Load a previous stage into ``model`` (HoliTok strictly, other parts when present) and the discriminators.

    ``path`` may also be any HoliTok checkpoint ``HoliTok.from_pretrained`` reads (our directory or the authors'
    model.pt), e.g. to fine-tune released weights. Returns human-readable notes on what was (not) loaded.
    """
    stage_dir = find_stage_dir(path)
    notes = []
    if stage_dir is None:
        if not Path(path).exists():
            raise FileNotFoundError(f"init_from {path} does not exist")
        source_model = load_holitok(HoliTok, str(path))
        state = source_model.state_dict()
        _widen(model.holitok, state, str(path), notes, source_model.config.istft_phase)
        load_state_dict_strict(model.holitok, state, str(path))
        return [f"HoliTok weights from {path}; everything else (flow, heads, discriminators) freshly initialised",
                *notes]
    state = load_file(str(stage_dir / TRAIN_STATE))
    source = str(stage_dir / TRAIN_STATE)
    source_phase = load_config(stage_dir / CONFIG_YAML).model.build().istft_phase
    for name, child in model.named_children():
        if child is None:
            continue
        if _load_child(child, state, f"{name}.", source, notes, source_phase):
            notes.append(f"{name} from {stage_dir}")
        elif name == "holitok":
            raise CheckpointError(f"{source} has no holitok.* tensors")
        else:
            notes.append(f"{name} freshly initialised (not in {stage_dir})")
    discriminator_file = stage_dir / DISCRIMINATOR_STATE
    if discriminator_file.is_file():
        load_state_dict_strict(discriminators, load_file(str(discriminator_file)), str(discriminator_file))
        notes.append(f"discriminators from {stage_dir}")
    else:
        notes.append("discriminators freshly initialised")
    return notes


def recorded_init(directory: Path) -> dict | None:
    return read_trainer_state(directory).get("init_from")


def init_fingerprint(path: str | Path) -> dict:
    """sha256 of the weights a stage is initialised from (a previous stage's hand-over, or a HoliTok checkpoint)."""
    stage_dir = find_stage_dir(path)
    path = Path(path)
    if stage_dir is not None:
        files = [stage_dir / TRAIN_STATE]
    elif path.is_dir():
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.pt"))
    else:
        files = [path]
    return {"path": str(path), "sha256": file_sha256(*files)}


def check_resume_init(resume_from: Path, init_from: str | Path) -> None:
    """Refuse to resume a stage whose initialisation has changed since it started (e.g. the previous stage was
    trained further): its encoder/decoder would no longer match the previous stage's export."""
    recorded = recorded_init(resume_from)
    current = init_fingerprint(init_from)
    if recorded is None:
        logger.warning("%s does not record what it was initialised from; cannot check it against %s",
                       resume_from, init_from)
        return
    if recorded["sha256"] != current["sha256"]:
        raise RuntimeError(
            f"{resume_from} was initialised from {recorded['path']} (sha256 {recorded['sha256'][:12]}), but "
            f"{init_from} now holds other weights (sha256 {current['sha256'][:12]}): resuming would mix two runs. "
            f"Delete {resume_from.parent} to restart this stage from the new weights, or restore the old ones.")
