"""Configs: reading a YAML (`read_config`: inherit, section files, `a.b=value` overrides) and building nested
dataclasses from it strictly (typos fail loudly). Both halves of the project read their configs here."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def build_dataclass(cls: type, data: Any, where: str = "config") -> Any:
    """Turn nested dicts into the dataclass tree `cls`, rejecting unknown keys with their dotted path.

    A missing or null section gets the dataclass defaults; lists become tuples where the field is a tuple.
    """
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in {where}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = _number(hint, value, f"{where}.{name}")
    return cls(**kwargs)


def _number(hint: Any, value: Any, where: str) -> Any:
    """A string given to a numeric field, parsed: YAML 1.1 reads `3e-4` (no dot) as a string, in files and in
    `--set` overrides alike, and it would otherwise fail far from here (or not at all)."""
    if not isinstance(value, str):
        return value
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kind = float if float in options else int if int in options else None
    if kind is None or str in options or Any in options:
        return value
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"{where} must be {'a number' if kind is float else 'an integer'}, got {value!r}") from None


def apply_override(doc: dict, assignment: str) -> None:
    """`a.b.c=value` (value parsed as YAML) into the nested dict; integer parts index lists (data.datasets.0.x)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ValueError(f"override {assignment!r} must look like section.key=value")
    *parents, leaf = key.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ValueError(f"override {assignment!r}: {part!r} is not a section")
    if isinstance(node, list):
        node[int(leaf)] = yaml.safe_load(raw)
    else:
        node[leaf] = yaml.safe_load(raw)


def plain(value: Any) -> Any:
    """Tuples -> lists, recursively, so a dataclass dict dumps to plain YAML/JSON."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_config(path: str | Path, overrides: list[str] | None = None, _seen: tuple[Path, ...] = ()) -> dict:
    """The one way every training YAML of this repository is read (tokenizer stages, unified runs, demo presets).

    - ``inherit: other.yaml`` (relative to this file): that file is read first (itself the same way) and this one is
      laid over it, mappings merged key by key; so a variant states only what differs (train_unite.yaml over
      train_base.yaml).
    - a top-level section written as a file name (``model: model_base.yaml``) is that file's section of the same name.
    - ``overrides`` (``section.key=value``, the ``--set`` of every entry point) are applied last.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ValueError(f"{path}: `inherit:` goes round in a circle ({' -> '.join(map(str, _seen + (path,)))})")
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a config file must be a mapping, got {type(doc).__name__}")
    for section, value in list(doc.items()):
        if section != "inherit" and isinstance(value, str) and value.endswith((".yaml", ".yml")):
            named = path.parent / value
            if not named.is_file():
                raise FileNotFoundError(f"{path}: `{section}: {value}` names {named}, which does not exist")
            part = (yaml.safe_load(named.read_text(encoding="utf-8")) or {}).get(section)
            if not isinstance(part, dict):
                raise ValueError(f"{named} (named by {path}) has no {section}: section")
            doc[section] = part
    parent = doc.pop("inherit", None)
    if parent is not None:
        doc = _merge(read_config(path.parent / parent, None, _seen + (path.resolve(),)), doc)
    for assignment in overrides or []:
        apply_override(doc, assignment)
    return doc
