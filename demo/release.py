"""Packs a finished `demo.pipeline` run into the small release folder the repository ships (and verifies one).

    python -m demo.release --run outputs/demo [--report outputs/demo/report] [--out weights/demo]

Layout of the release (safetensors + JSON only; the prompt wavs are 16 kHz, the corpus' native rate):
  tokenizer/          HoliTok.save_pretrained folder
  unified/            UnifiedModel.save_pretrained folder (with its text tokenizer)
  examples/*.wav      voice prompts of held-out voices, examples.json lists them with their transcripts
  report.md           the listener report (python -m eval.report, the pipeline's last step) of exactly these weights,
  spectrograms.png    and its picture (original | resynthesis | TTS per voice; 256 colours, scaled down to at most
                      PICTURE_BYTES so that the weights keep the room)
  manifest.json       command, preset, commit, steps, seeds, the report's numbers and the sha256 of every file
`verify_release(dir)` recomputes every sha256 and refuses a folder whose files differ from its manifest.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from holitok.checkpoint import file_sha256 as sha256

from .config import REPO_ROOT, load_pipeline_config

MANIFEST = "manifest.json"
DEFAULT_RELEASE = REPO_ROOT / "weights" / "demo"
EXAMPLE_RATE = 16000
MAX_RELEASE_BYTES = 50_000_000  # the repository ships at most 50 MB of weights (tests/test_shipped_weights.py)
PICTURE_BYTES = 600_000


class ReleaseError(RuntimeError):
    """A release folder is incomplete or its files do not match its manifest."""


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def _steps(run: Path) -> dict:
    state = json.loads((run / "pipeline_state.json").read_text())
    steps = {}
    for stage_config in sorted((run / "configs").glob("tokenizer_stage*.yaml")):
        doc = yaml.safe_load(stage_config.read_text())
        steps[f"tokenizer_{stage_config.stem.split('_')[-1]}"] = doc["train"]["max_steps"]
    unified = yaml.safe_load((run / "configs" / "train_unified.yaml").read_text())
    steps["unified"] = unified["train"]["max_steps"]
    if (run / "configs" / "train_refine.yaml").is_file():  # a preset with a refine stage (demo/pipeline.py)
        steps["aligner"] = json.loads((run / "aligner" / "training.json").read_text())["steps"]
        steps["refine"] = yaml.safe_load((run / "configs" / "train_refine.yaml").read_text())["train"]["max_steps"]
    return {"steps": steps, "seconds": {k: v.get("seconds") for k, v in state["steps"].items()},
            "preset": next(iter(state["steps"].values())).get("preset"), "unified_seed": unified["train"]["seed"]}


def _final_model(run: Path) -> Path:
    """The model the run's pipeline ended with (PipelineConfig.final_model: step 5's or step 4's)."""
    preset = next(iter(json.loads((run / "pipeline_state.json").read_text())["steps"].values())).get("preset")
    return run / load_pipeline_config(preset).final_model


def build_release(run: str | Path, report_dir: str | Path, out: str | Path, examples_per_voice: int = 2,
                  lineage: dict | None = None) -> Path:
    """Copies the run's tokenizer, final unified model and prompt examples into `out` and writes the manifest."""
    import soundfile as sf

    from holitok.audio import load_audio, resample

    run, report_dir, out = Path(run), Path(report_dir), Path(out)
    report = json.loads((report_dir / "report.json").read_text())
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(run / "tokenizer", staging / "tokenizer")
    shutil.copytree(_final_model(run), staging / "unified")
    examples, counts = [], {}
    for item in json.loads((run / "examples.json").read_text()):
        voice = Path(item["prompt_wav"]).parent.name
        if counts.get(voice, 0) >= examples_per_voice:
            continue
        counts[voice] = counts.get(voice, 0) + 1
        name = f"examples/{Path(item['prompt_wav']).stem}.wav"
        (staging / "examples").mkdir(parents=True, exist_ok=True)
        audio = load_audio(item["prompt_wav"]).numpy()
        sf.write(staging / name, resample(audio, 48000, EXAMPLE_RATE), EXAMPLE_RATE, subtype="PCM_16")
        examples.append({**item, "prompt_wav": name})
    (staging / "examples.json").write_text(json.dumps(examples, indent=1))
    shutil.copy(report_dir / "report.md", staging / "report.md")
    _light_picture(report_dir / "spectrograms.png", staging / "spectrograms.png")
    corpus = json.loads((run / "corpus" / "corpus.json").read_text())
    shown = run.resolve().relative_to(REPO_ROOT) if run.resolve().is_relative_to(REPO_ROOT) else run
    info = _steps(run)
    manifest = {
        "command": f"python -m demo.pipeline --preset {info['preset']} --no-launch --out {shown} && "
                   f"python -m demo.release --run {shown}",
        "preset": info["preset"], "commit": _commit(), "steps": info["steps"], "step_seconds": info["seconds"],
        "data_seed": corpus["config"]["seed"], "unified_seed": info["unified_seed"],
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quality": {"judges": report["judges"], "per_voice": report["per_voice"],
                    "splits": {split: block["all"] for split, block in report["splits"].items()},
                    "targets": report["targets"]},
        "files": {str(p.relative_to(staging)): sha256(p) for p in _files(staging)},
    }
    if lineage:
        # A run that did not go through the pipeline in one piece (e.g. a stage continued from an earlier release
        # across sessions) records each command it really ran; `command` above is its from-scratch reproduction.
        manifest["lineage"] = lineage
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    total = sum(p.stat().st_size for p in _files(staging))
    if total > MAX_RELEASE_BYTES:
        raise ReleaseError(f"the release would take {total / 1e6:.1f} MB, more than the {MAX_RELEASE_BYTES / 1e6:.0f} MB "
                           f"the repository ships (left in {staging}, {out} unchanged)")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def _light_picture(source: Path, target: Path) -> None:
    """The report's picture as a 256-colour PNG, scaled down until it takes at most PICTURE_BYTES."""
    import io

    from PIL import Image

    image = Image.open(source).convert("RGB")
    for scale in (1.0, 0.8, 0.6, 0.5, 0.4, 0.3):
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        buffer = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).quantize(colors=256).save(buffer, "PNG", optimize=True)
        if buffer.tell() <= PICTURE_BYTES:
            break
    target.write_bytes(buffer.getvalue())


def verify_release(directory: str | Path = DEFAULT_RELEASE) -> dict:
    """The manifest of a release whose every file matches its sha256; ReleaseError naming each mismatch otherwise."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ReleaseError(f"{directory} is not a release folder ({MANIFEST} missing); build one with "
                           "`python -m demo.release` after `python -m demo.pipeline`")
    manifest = json.loads(path.read_text())
    problems = []
    for name, expected in manifest["files"].items():
        file = directory / name
        if not file.is_file():
            problems.append(f"{name}: missing")
        elif sha256(file) != expected:
            problems.append(f"{name}: sha256 differs from the manifest")
    extra = sorted(str(p.relative_to(directory)) for p in _files(directory))
    problems += [f"{name}: not in the manifest" for name in extra if name not in manifest["files"]]
    if problems:
        raise ReleaseError(f"{directory} does not match its manifest: " + "; ".join(problems))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="outputs/demo", help="a finished demo.pipeline output folder")
    parser.add_argument("--report", default=None, help="its eval.report folder (default RUN/report)")
    parser.add_argument("--out", default=str(DEFAULT_RELEASE))
    parser.add_argument("--lineage", default=None,
                        help="a JSON file with the commands a multi-session run really ran (stored in the manifest)")
    args = parser.parse_args(argv)
    lineage = json.loads(Path(args.lineage).read_text()) if args.lineage else None
    out = build_release(args.run, args.report or Path(args.run) / "report", args.out, lineage=lineage)
    manifest = verify_release(out)
    size = sum((out / name).stat().st_size for name in manifest["files"]) / 1e6
    print(f"release written to {out}: {len(manifest['files'])} files, {size:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
