"""bench/gpu_suite.py --smoke on CPU: every section of the GPU report runs on tiny configs and reports what it should
(the speed numbers themselves are the GPU machine's business, never asserted here)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_fills_every_section(tmp_path):
    suite = load_suite()
    out = tmp_path / "report.json"
    assert suite.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert set(sections) == {"tts_batch1", "tts_batch16", "asr_batch16", "training_step", "codec"}
    assert sections["tts_batch1"]["rtf"] > 0 and sections["tts_batch16"]["audio_seconds_per_second"] > 0
    assert sections["tts_batch1"]["audio_seconds_each"] == pytest.approx(round(1.0 * 6.25) / 6.25)
    assert sections["asr_batch16"]["times_real_time"] > 0
    assert sections["training_step"]["positions"] > 0 and sections["training_step"]["trainable_parameters"] > 0
    codec = sections["codec"]
    assert codec["decode_float32"]["max_abs_error_vs_float32"] == 0.0
    assert 0 < codec["decode_bf16"]["max_abs_error_vs_float32"] < 1.0  # half precision differs, within reason
    assert codec["extraction"]["audio_hours_per_gpu_minute"] > 0


def test_the_full_suite_refuses_to_run_without_a_gpu(tmp_path, monkeypatch, capsys):
    import torch

    suite = load_suite()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        suite.main(["--out", str(tmp_path / "r.json")])
    assert "needs a GPU" in capsys.readouterr().err and not (tmp_path / "r.json").exists()
