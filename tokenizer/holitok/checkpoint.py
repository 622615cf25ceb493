"""Checkpoint I/O: the authors' model.pt / semantic.pt (safe, strict), our safetensors directories, and export."""
from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .config import HoliTokConfig, SemanticConfig, load_model_config, resolve_preset_name
from .layers import weight_norm_parts

RUNTIME_FORMAT = "holitok-runtime-state-dict-v1"
SAFETENSORS_FORMAT = "holitok-safetensors-v1"
WEIGHTS_NAME, CONFIG_NAME, RUNTIME_NAME, SEMANTIC_NAME = "model.safetensors", "config.json", "model.pt", "semantic.pt"
DEFAULT_REPO_ID = "bovod-sjtu/HoliTok"
# Modules that existed only while the authors trained; their weights may appear in a checkpoint and are ignored.
TRAINING_ONLY_PREFIXES = ("flow.", "gq.", "quantizer.", "supervise_net.", "wavlm_", "xvector_", "pitch_",
                          "intensity_", "sid_mlp.", "self_distill_proj.", "vq_", "before_vq_proj.", "after_vq_proj.",
                          "code_activity", "decoder_buckets")
SEMANTIC_PREFIXES = ("supervise_net.in_proj.", "supervise_net.encoder.")


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message lists every key and shape that differs."""


def file_sha256(*paths: str | Path) -> str:
    """One sha256 over the bytes of `paths` in order (checkpoint fingerprints, release manifests)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_torch_checkpoint(path: str | Path) -> Any:
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path} holds objects other than tensors and plain containers; refusing to "
                              f"unpickle it (weights_only=True): {str(err).splitlines()[0]}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable torch checkpoint: {str(err).splitlines()[0]}") from None


def _flat_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    sd = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: unknown checkpoint layout (expected a state dict or a dict with a 'model' "
                              f"state dict of tensors)")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _adapt_weight_norm_layout(sd: dict[str, Tensor], expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """Accept checkpoints whose weight norm was folded (`weight`) where the model stores weight_g/weight_v."""
    out = dict(sd)
    for key in list(sd):
        if not key.endswith(".weight"):
            continue
        base = key[: -len("weight")]
        if key not in expected and base + "weight_v" in expected and base + "weight_v" not in sd:
            out[base + "weight_g"], out[base + "weight_v"] = weight_norm_parts(out.pop(key))
    return out


def state_dict_differences(expected: dict[str, Tensor], given: dict[str, Tensor]
                           ) -> tuple[list[str], list[str], list[str]]:
    """(missing keys, unexpected keys, "key: checkpoint (shape) vs model (shape)" lines), each sorted: the one strict
    comparison every loader in the repository (HoliTok, the unified model, partial initialisation) reports from."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(given) & set(expected) if given[k].shape != expected[k].shape)
    return missing, unexpected, shapes


def load_state_dict_strict(model: nn.Module, sd: dict[str, Tensor], source: str) -> None:
    expected = model.state_dict()
    sd = _adapt_weight_norm_layout(sd, expected)
    missing, unexpected, shapes = state_dict_differences(expected, sd)
    if missing or unexpected or shapes:
        def listing(title: str, items: list[str]) -> str:
            shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""
        raise CheckpointError(f"{source} does not match the model:" + listing("missing keys", missing)
                              + listing("unexpected keys", unexpected) + listing("shape mismatches", shapes))
    model.load_state_dict(sd, strict=True)


def runtime_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The runtime keys of an authors' model.pt (training-only prefixes dropped by name)."""
    sd = _flat_state_dict(read_torch_checkpoint(path), Path(path))
    return {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


# ---- our format: safetensors + config.json ---------------------------------------------------------------------
def save_safetensors_dir(module: nn.Module, directory: str | Path, config: dict[str, Any]) -> None:
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": SAFETENSORS_FORMAT})
    (directory / CONFIG_NAME).write_text(json.dumps({"format": SAFETENSORS_FORMAT, **config}, indent=1))


def read_json(path: str | Path) -> Any:
    """A checkpoint's JSON file; CheckpointError naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None


def _read_config_json(directory: Path) -> dict[str, Any]:
    return read_json(directory / CONFIG_NAME)


def load_safetensors_dir(directory: Path, section: str, build) -> nn.Module:
    """A module saved by `save_safetensors_dir`: `build(config[section])`, then a strict load of its weights."""
    cfg = _read_config_json(directory)
    if section not in cfg:
        raise CheckpointError(f"{directory / CONFIG_NAME} has no '{section}' section")
    model = build(cfg[section])
    load_state_dict_strict(model, _read_safetensors(directory / WEIGHTS_NAME), str(directory))
    return model


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    """Every tensor of a safetensors file; CheckpointError naming the file when it is not one (truncated, garbage)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from None


_read_safetensors = read_safetensors


# ---- HoliTok ---------------------------------------------------------------------------------------------------
def resolve_preset_file(preset: str, filename: str, *, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, repo_id: str | None = None,
                        revision: str | None = None) -> Path:
    """Find `<preset>/<filename>` in the local cache ($HOLITOK_CACHE_DIR, ~/.cache/holitok), else the hub."""
    roots = [Path(p) for p in (cache_dir, os.environ.get("HOLITOK_CACHE_DIR")) if p]
    roots.append(Path.home() / ".cache" / "holitok")
    for root in roots:
        for candidate in (root / preset / filename, *sorted(root.glob(f"**/{preset}/{filename}"))):
            if candidate.is_file():
                return candidate
    if local_files_only:
        raise FileNotFoundError(f"{preset}/{filename} is not in the local cache ({', '.join(map(str, roots))}); "
                                f"pass checkpoint=PATH or put the file at {roots[0] / preset / filename}")
    try:
        from huggingface_hub import hf_hub_download
        return Path(hf_hub_download(repo_id or os.environ.get("HOLITOK_HF_REPO_ID", DEFAULT_REPO_ID),
                                    f"{preset}/{filename}", revision=revision,
                                    cache_dir=str(cache_dir) if cache_dir else None))
    except Exception as err:  # the hub client raises many network error types; all mean "not available"
        raise FileNotFoundError(f"could not find {preset}/{filename} locally nor download it ({type(err).__name__}: "
                                f"{err}); pass checkpoint=PATH to a local copy") from None


def load_holitok(build: Callable[[HoliTokConfig], nn.Module], source: Any, checkpoint: str | Path | None = None,
                 **resolve_kwargs):
    """Build (``build(config)``, i.e. the HoliTok class: this module sits below model.py and does not import it) and
    load a HoliTok, weight norm unfolded, from any source `HoliTok.from_pretrained` accepts."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        directory = Path(source)
        if (directory / WEIGHTS_NAME).is_file():
            return load_safetensors_dir(directory, "holitok", lambda c: build(HoliTokConfig.from_dict(c)))
        if (directory / RUNTIME_NAME).is_file():
            config = directory / CONFIG_NAME if (directory / CONFIG_NAME).is_file() else "HoliTok-Base"
            return load_holitok(build, config, checkpoint or directory / RUNTIME_NAME)
        raise CheckpointError(f"{directory} holds neither {WEIGHTS_NAME} nor {RUNTIME_NAME}")
    if isinstance(source, (str, Path)) and str(source).endswith(".pt"):
        path = Path(source)
        sibling = path.with_name(CONFIG_NAME)
        return load_holitok(build, sibling if sibling.is_file() else "HoliTok-Base", path)
    config = load_model_config(source)
    if checkpoint is None:
        preset = resolve_preset_name(str(source)) if isinstance(source, (str, Path)) else None
        if preset is None or preset == "tiny":
            raise CheckpointError(f"no checkpoint given for config {source!r}")
        checkpoint = resolve_preset_file(preset, RUNTIME_NAME, **resolve_kwargs)
    model = build(config)
    load_state_dict_strict(model, runtime_state_dict(checkpoint), str(checkpoint))
    return model


def export_runtime_checkpoint(model, path: str | Path, model_name: str = "HoliTok") -> None:
    """Write the authors' model.pt layout: weight norm as weight_g/weight_v, anti-alias buffers included."""
    import copy
    if model.config.decoder_head != "waveform":
        raise ValueError(f"the authors' runtime has no {model.config.decoder_head!r} decoder head: this model can only "
                         "be saved in our format (save_pretrained)")
    unfolded = copy.deepcopy(model).cpu().float().unfold_weight_norm()
    sd = OrderedDict((k, v.detach().clone()) for k, v in unfolded.state_dict().items())
    torch.save({"format": RUNTIME_FORMAT, "model_name": model_name, "model": sd,
                "metadata": {"num_tensors": len(sd), "num_source_tensors": len(sd), "num_skipped_tensors": 0}},
               str(path))


# ---- semantic module -------------------------------------------------------------------------------------------
def _semantic_config_from_tensors(sd: dict[str, Tensor], num_heads: int, causal: bool) -> SemanticConfig:
    layer_ids = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    if not layer_ids:
        raise CheckpointError("semantic checkpoint has no 'encoder.layers.N.*' tensors")
    hidden = sd["encoder.layers.0.attn.o_proj.weight"].shape[0]
    ffn_key = "encoder.layers.0.ffn.fc1.weight"
    ffn = sd[ffn_key].shape[0] if ffn_key in sd else 4 * hidden
    has_in_proj = "in_proj.weight" in sd
    input_dim = sd["in_proj.weight"].shape[1] if has_in_proj else hidden
    return SemanticConfig(input_dim=input_dim, hidden_size=hidden, num_layers=max(layer_ids) + 1,
                          num_heads=num_heads, ffn_hidden_size=ffn, causal=causal, use_in_proj=has_in_proj)


def load_semantic(build: Callable[[SemanticConfig], nn.Module], source: str | Path, num_heads: int = 16,
                  causal: bool = True):
    """Build (``build(config)``: the SemanticModule class) and load our directory or the authors' semantic.pt."""
    source = Path(source)
    if source.is_dir():
        if (source / WEIGHTS_NAME).is_file():
            return load_safetensors_dir(source, "semantic", lambda c: build(SemanticConfig.from_dict(c)))
        source = source / SEMANTIC_NAME
    sd = _flat_state_dict(read_torch_checkpoint(source), source)
    # Only the encoder part of the training-time supervision net is the semantic module; the rest is ignored.
    sd = {k.removeprefix("supervise_net."): v for k, v in sd.items() if k.startswith(SEMANTIC_PREFIXES)}
    if not sd:
        raise CheckpointError(f"{source} has no keys under {' or '.join(SEMANTIC_PREFIXES)}")
    try:
        config = _semantic_config_from_tensors(sd, num_heads, causal)
    except KeyError as err:
        raise CheckpointError(f"{source}: cannot infer the semantic architecture, missing {err}") from None
    model = build(config)
    load_state_dict_strict(model, sd, str(source))
    return model


def export_semantic_checkpoint(module, path: str | Path) -> None:
    """Write the authors' semantic.pt layout: {'model': {'supervise_net.<key>': tensor}}."""
    sd = OrderedDict((f"supervise_net.{k}", v.detach().cpu().clone()) for k, v in module.state_dict().items())
    torch.save({"model": sd}, str(path))
