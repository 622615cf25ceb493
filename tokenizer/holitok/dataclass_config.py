"""Nested dataclass configs from YAML/JSON dicts: strict building (typos fail loudly) and `a.b=value` overrides."""
from __future__ import annotations

import dataclasses
import typing
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
            kwargs[name] = value
    return cls(**kwargs)


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
