"""Widen a trained unified model (and its aligner) to more latent channels: new inputs read nothing, new outputs are 0.

Why: a tokenizer that gains channels after the learnt ones (holitok's pitch_latents: F0 and voicing appended, the
learnt channels bit-identical) should not cost a unified model trained from nothing. The widened model reads and
writes the old channels exactly as before (its ASR is unchanged; its TTS draws the new channels as the flow's
starting noise until trained), so a fine-tune only has to teach the flow head the new channels.

    python -m holitok_slm.widen --model weights/demo/unified --latent_dim 72 --out outputs/wide/unified
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from .model.ctc_aligner import CTCAligner
from .model.unified import UnifiedModel

# Tensors whose last dimension reads the latent channels, and those whose first dimension writes them.
INPUT_COLUMNS = ("patch_encoder.in_proj.weight", "dit.latent_in.weight")
OUTPUT_ROWS = ("dit.out.weight", "dit.out.bias")
PER_PATCH_ROWS = ("patch_regressor.weight", "patch_regressor.bias")  # [patch_size * latent_dim, ...]


def _pad(tensor: torch.Tensor, dim: int, size: int, value: float = 0.0) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = size - tensor.shape[dim]
    return torch.cat([tensor, torch.full(shape, value, dtype=tensor.dtype)], dim=dim)


def widen_state(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], old_dim: int, new_dim: int,
                patch_size: int) -> dict[str, torch.Tensor]:
    """`state` (a model at old_dim latent channels) laid out as `own` (the same model at new_dim). Every other
    difference is an error that names the key and the shapes."""
    out, problems = {}, []
    for key, target in own.items():
        if key not in state:
            problems.append(f"{key} missing")
            continue
        tensor = state[key].to(target.dtype)
        if tensor.shape == target.shape:
            out[key] = tensor
        elif key in INPUT_COLUMNS and tensor.shape[-1] == old_dim and target.shape[-1] == new_dim:
            out[key] = _pad(tensor, -1, new_dim)
        elif key in OUTPUT_ROWS and tensor.shape[0] == old_dim and target.shape[0] == new_dim:
            out[key] = _pad(tensor, 0, new_dim)
        elif key in PER_PATCH_ROWS and tensor.shape[0] == patch_size * old_dim:
            rows = tensor.reshape(patch_size, old_dim, *tensor.shape[1:])
            out[key] = _pad(rows, 1, new_dim).reshape(target.shape)
        else:
            problems.append(f"{key}: {tuple(tensor.shape)} cannot become {tuple(target.shape)}")
    problems += [f"{key} unexpected" for key in state if key not in own]
    if problems:
        raise ValueError(f"cannot widen the latents from {old_dim} to {new_dim} channels: " + "; ".join(problems[:20]))
    return out


def widen_aligner(aligner: CTCAligner, new_dim: int) -> CTCAligner:
    """The same alignments from wider latents: the new channels are normalised to themselves and read by zeros."""
    if aligner.config.latent_dim >= new_dim:
        raise ValueError(f"the aligner already reads {aligner.config.latent_dim} latent channels; widening needs "
                         "more than that")
    cfg = copy.deepcopy(aligner.config)
    cfg.latent_dim = new_dim
    wide = CTCAligner(cfg, aligner.text_tokenizer)
    state = dict(aligner.state_dict())
    state["inp.weight"] = _pad(state["inp.weight"], -1, new_dim)
    state["latent_mean"] = _pad(state["latent_mean"], 0, new_dim, 0.0)
    state["latent_std"] = _pad(state["latent_std"], 0, new_dim, 1.0)
    wide.load_state_dict(state, strict=True)
    return wide.eval()


def widen_model(model: UnifiedModel, new_dim: int, pitch_channels: int | None = None) -> UnifiedModel:
    """`pitch_channels`: how many of the (new, last) channels are the tokenizer's pitch latents; None = all the new
    ones (holitok's pitch_latents is how a tokenizer gains channels)."""
    cfg = copy.deepcopy(model.config)
    old_dim = cfg.latent_dim
    if new_dim <= old_dim:
        raise ValueError(f"the model already has {old_dim} latent channels; widening needs more than that")
    pitch_channels = new_dim - old_dim if pitch_channels is None else pitch_channels
    if cfg.pitch_channels or not 0 <= pitch_channels <= new_dim - old_dim:
        raise ValueError(f"the pitch channels must be among the {new_dim - old_dim} new ones (the model has "
                         f"{cfg.pitch_channels} already; asked for {pitch_channels})")
    cfg.pitch_channels = pitch_channels
    if cfg.audio_input != "patch":
        raise ValueError(f"widening supports the patch encoder's audio input only, not {cfg.audio_input!r} (a "
                         "semantic encoder's input width is its own pretrained model's)")
    cfg.latent_dim = new_dim
    wide = UnifiedModel.from_config(cfg, text_tokenizer=model.text_tokenizer)
    own = wide.state_dict()
    state = {key: tensor.float() if tensor.is_floating_point() else tensor for key, tensor in model.state_dict().items()}
    wide.load_checked_state_dict(widen_state(state, own, old_dim, new_dim, cfg.patch_size))
    if model.aligner is not None:
        wide.attach_aligner(widen_aligner(model.aligner, new_dim))
    return wide.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a UnifiedModel save_pretrained folder")
    parser.add_argument("--latent_dim", type=int, required=True, help="the new number of latent channels")
    parser.add_argument("--pitch_channels", type=int, default=None,
                        help="how many of the new (last) channels are the tokenizer's pitch latents (default: all)")
    parser.add_argument("--out", required=True, help="where the widened model is saved (float32)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty; choose another --out")
    model = UnifiedModel.from_pretrained(args.model)
    old_dim = model.config.latent_dim
    widen_model(model, args.latent_dim, args.pitch_channels).save_pretrained(out)
    print(f"widened {args.model} from {old_dim} to {args.latent_dim} latent channels -> {out}"
          f"{' (with its aligner)' if model.aligner is not None else ''}")


if __name__ == "__main__":
    main()
