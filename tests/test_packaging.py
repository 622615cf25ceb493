"""setup.cfg lists every package directory, so a non-editable install ships all of the code."""
from __future__ import annotations

import configparser

from conftest import REPO


def test_every_package_is_listed():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = set()
    for init in REPO.rglob("__init__.py"):
        rel = init.parent.relative_to(REPO)
        if rel.parts[0] in (".venv", "tests", "build") or "egg-info" in str(rel):
            continue
        parts = rel.parts[1:] if rel.parts[0] == "tokenizer" else rel.parts
        found.add(".".join(parts))
    assert found == listed, f"missing from setup.cfg: {sorted(found - listed)}; stale: {sorted(listed - found)}"
    assert (REPO / "tokenizer/holitok/assets/hello.wav").is_file()
