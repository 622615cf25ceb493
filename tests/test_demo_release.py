"""demo.release: the shipped release folder is verified file by file against its manifest before the demo uses it."""
from __future__ import annotations

import json

import pytest

from demo import release


def _fake_release(root):
    (root / "tokenizer").mkdir(parents=True)
    (root / "tokenizer" / "config.json").write_text("{}")
    (root / "report.md").write_text("# report\n")
    files = {str(p.relative_to(root)): release.sha256(p) for p in release._files(root)}
    (root / release.MANIFEST).write_text(json.dumps({"files": files, "command": "x", "commit": "y"}))
    return root


def test_an_intact_release_verifies(tmp_path):
    manifest = release.verify_release(_fake_release(tmp_path / "r"))
    assert set(manifest["files"]) == {"tokenizer/config.json", "report.md"}


@pytest.mark.parametrize("tamper, message", [
    (lambda r: (r / "report.md").write_text("# other\n"), "report.md: sha256 differs"),
    (lambda r: (r / "tokenizer" / "config.json").unlink(), "tokenizer/config.json: missing"),
    (lambda r: (r / "extra.bin").write_bytes(b"1"), "extra.bin: not in the manifest"),
])
def test_a_changed_release_is_refused_with_the_file_named(tmp_path, tamper, message):
    root = _fake_release(tmp_path / "r")
    tamper(root)
    with pytest.raises(release.ReleaseError, match=message):
        release.verify_release(root)


def test_a_folder_without_manifest_says_how_to_build_one(tmp_path):
    with pytest.raises(release.ReleaseError, match="python -m demo.release"):
        release.verify_release(tmp_path)


def test_the_report_picture_is_made_light_enough_to_ship(tmp_path):
    import numpy as np
    from PIL import Image

    noisy = np.random.default_rng(0).integers(0, 256, size=(1200, 1000, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(tmp_path / "big.png")
    assert (tmp_path / "big.png").stat().st_size > 2 * release.PICTURE_BYTES
    release._light_picture(tmp_path / "big.png", tmp_path / "light.png")
    assert (tmp_path / "light.png").stat().st_size <= release.PICTURE_BYTES
    with Image.open(tmp_path / "light.png") as light:
        assert light.format == "PNG" and light.width / light.height == pytest.approx(1000 / 1200, rel=0.01)
