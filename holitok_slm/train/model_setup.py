"""Model-side preparation of a training run: text tokenizer for from-scratch configs, latent statistics, DiT init."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from holitok.checkpoint import state_dict_differences
from holitok_slm.config import UnifiedConfig
from holitok_slm.train.bad_items import BadItemLog
from holitok_slm.train.latent_store import BadItem, LatentStore
from holitok_slm.train.task_deck import Stream

WEIGHTS_FILE = "model.safetensors"


def corpus_texts(stores: list[LatentStore]) -> list[str]:
    return [store.meta(i)["text"] for store in stores for i in range(len(store))]


def note_trained_characters(model, stores: list[LatentStore], init_from: str | Path | None, log) -> None:
    """Records in the model's text tokenizer the byte-fallback characters its training text has (so inference accepts
    them: TextTokenizer.unknown_characters), together with those the warm-start model had learnt."""
    tokenizer = model.text_tokenizer
    if tokenizer is None or tokenizer.kind != "sentencepiece":
        return
    if init_from:
        from holitok_slm.model.unified import text_tokenizer_dir
        from holitok_slm.text_tokenizer import TextTokenizer

        folder = text_tokenizer_dir(resolve_weights(init_from).parent)
        if folder.is_dir():
            tokenizer.trained_fallback_characters |= TextTokenizer.load(folder).trained_fallback_characters
    new = tokenizer.note_trained_characters(corpus_texts(stores))
    if new:
        log(f"text: {len(new)} character(s) outside the text tokenizer's pieces, learnt as byte pieces: "
            f"{' '.join(sorted(new))}")


def ensure_sentencepiece(cfg: UnifiedConfig, stores: list[LatentStore], output_dir: Path, is_main: bool,
                         wait) -> None:
    """From-scratch configs with `tokenizer.kind: sentencepiece` and no path get one trained on the training text,
    saved in the run folder (so a resumed run finds the same vocabulary)."""
    if cfg.text_tokenizer.kind != "sentencepiece" or cfg.text_tokenizer.path:
        return
    from holitok_slm.text_tokenizer import train_sentencepiece

    path = output_dir / "text_tokenizer" / "spm.model"
    if is_main and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train_sentencepiece(corpus_texts(stores), path, vocab_size=cfg.text_tokenizer.sentencepiece_vocab_size)
    wait()
    cfg.text_tokenizer.path = str(path)


def statistics_items(stores: list[LatentStore], streams: list[Stream], per_stream: int,
                     bad_items: BadItemLog) -> list[dict]:
    """The first `per_stream` usable items of every stream, in index order: the same on every rank."""
    items = []
    for stream in streams:
        taken = 0
        for index in stream.indices:
            if taken >= per_stream:
                break
            try:
                item = stores[stream.dataset].load(int(index))
            except BadItem as err:
                bad_items.add(stores[stream.dataset].ids[int(index)], str(err))
                continue
            item["task"] = stream.task
            items.append(item)
            taken += 1
    return items


def resolve_weights(source: str | Path) -> Path:
    """A save_pretrained folder, a training checkpoint (its model/ folder) or a .safetensors file."""
    source = Path(source)
    for candidate in (source, source / WEIGHTS_FILE, source / "model" / WEIGHTS_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {WEIGHTS_FILE} in {source} or {source / 'model'}")


def init_submodules_from(model: torch.nn.Module, source: str | Path, prefixes: list[str]) -> list[str]:
    """Copies every parameter/buffer under `prefixes` (e.g. the DiT head of a TTS-only run) from a checkpoint;
    any key or shape difference under those prefixes is an error that names it. Returns the copied keys."""
    state = load_file(str(resolve_weights(source)))
    own = model.state_dict()

    def selected(keys):
        return {k for k in keys if any(k.startswith(p) for p in prefixes)}

    wanted, available = selected(own), selected(state)
    if not wanted:
        raise ValueError(f"the model has no parameters under {prefixes}")
    # A tied tensor (the embedding and LM head) is saved once by safetensors' save_model; its other name is
    # copied with it.
    by_storage = {}
    for key, tensor in own.items():
        by_storage.setdefault(tensor.data_ptr(), []).append(key)
    tied = {alias: key for keys in by_storage.values() for key in keys if key in state
            for alias in keys if alias not in state}
    wanted -= set(tied)
    missing, unexpected, shapes = state_dict_differences({k: own[k] for k in wanted},
                                                         {k: state[k] for k in available})
    if missing or unexpected or shapes:
        raise ValueError(f"cannot initialise {prefixes} from {source}: missing={missing[:20]} "
                         f"unexpected={unexpected[:20]} shape_mismatch={shapes[:20]}")
    merged = dict(own)
    merged.update({k: state[k] for k in wanted})
    merged.update({alias: state[key] for alias, key in tied.items() if key in wanted})
    model.load_state_dict(merged, strict=True)
    return sorted(wanted)


def freeze_all_but(model: torch.nn.Module, prefixes: list[str]) -> int:
    """requires_grad only for the parameters under `prefixes` (train.trainable_prefixes); returns how many train.
    A prefix that matches nothing is an error (a typo would otherwise train nothing, or not what was meant)."""
    names = [name for name, _ in model.named_parameters()]
    unmatched = [p for p in prefixes if not any(name.startswith(p) for name in names)]
    if unmatched or not prefixes:
        raise ValueError(f"train.trainable_prefixes {prefixes}: no parameter starts with {unmatched or prefixes}")
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(tuple(prefixes)))
        count += int(param.requires_grad)
    return count


def apply_semantic_freeze(cfg: UnifiedConfig, freeze: bool | None) -> None:
    """train.freeze_semantic_encoder (paper Table 8) -> model.semantic_input.trainable, saved with the model."""
    if freeze is None:
        return
    if cfg.audio_input != "semantic":
        raise ValueError("train.freeze_semantic_encoder applies to Unite models (model.audio_input: semantic); "
                         f"this model uses audio_input={cfg.audio_input!r}")
    cfg.semantic_input.trainable = not freeze


def check_semantic_source(cfg: UnifiedConfig, use_semantic_features: bool) -> None:
    """Stored Unite features (data.use_semantic_features) only for a frozen encoder: a trainable one changes as it
    trains, so its features are computed on the fly from the latents and stored ones would be read for nothing."""
    if use_semantic_features and cfg.audio_input == "semantic" and cfg.semantic_input.trainable:
        raise ValueError("data.use_semantic_features reads features precomputed by a frozen encoder, but this run "
                         "trains the semantic encoder (its features are computed on the fly from the latents): set "
                         "train.freeze_semantic_encoder=true or data.use_semantic_features=false")


def store_aligner(cfg: UnifiedConfig, stores: list[LatentStore]):
    """The CTCAligner that aligned the stores of a forced-pointer run (the model saves it, so that its TTS aligns a
    prompt the way its training data was aligned), or None when a unified model's CTC aligned them. Refuses stores
    aligned by different aligners, or by an aligner folder that is no longer there."""
    from ..model.ctc_aligner import CTCAligner

    if not (cfg.text_pointer and cfg.text_pointer_alignment == "forced"):
        return None
    indexes = [store.points_index() for store in stores]
    by_aligner = [index.get("aligner_kind") == "ctc_aligner" for index in indexes]
    if not any(by_aligner):
        return None
    used = {index["model"] for index in indexes}
    if len(used) > 1 or not all(by_aligner):
        raise ValueError(f"the stores were aligned by different aligners ({sorted(str(i.get('model')) for i in indexes)}):"
                         " realign them with one (data_prep/align_latents.py --overwrite)")
    path = Path(used.pop())
    if not path.is_dir():
        raise ValueError(f"the stores' points were aligned by the CTCAligner {path}, which is not there any more: a "
                         "model trained on them could not align its prompts the same way; realign with "
                         "data_prep/align_latents.py --overwrite")
    return CTCAligner.from_pretrained(path)


def check_text_points(cfg: UnifiedConfig, stores: list[LatentStore], tokenizer) -> None:
    """A forced text pointer (model.text_pointer_alignment "forced") reads each store's forced alignment: every
    store must have one (`points/`), and its positions must count this model's text tokens (the aligning model's
    tokenizer split the index's probe text the same way)."""
    if not (cfg.text_pointer and cfg.text_pointer_alignment == "forced"):
        return
    for store in stores:
        probe = store.points_index()["probe"]
        ids = tokenizer.encode(probe["text"].strip())
        if ids != probe["ids"]:
            raise ValueError(f"{store.path}/points was aligned with another text tokenizer: it split {probe['text']!r} "
                             f"into {probe['ids'][:12]}..., this model's into {ids[:12]}...; realign with "
                             "data_prep/align_latents.py and a model of this tokenizer")
