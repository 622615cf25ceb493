"""One command from nothing to a running demo: synthetic corpus -> tiny HoliTok -> latents -> tiny unified model -> Gradio.

    python -m demo.pipeline                      # default preset (measured times in docs/demo.md), then the demo
    python -m demo.pipeline --preset tiny        # smaller and faster, worse audio
    python -m demo.pipeline --preset smoke --no-launch --out /tmp/demo_smoke   # plumbing check in a few minutes
    python -m demo.pipeline --port 7861 --threads 2

Steps (each runs the project's own command, printed before it starts, so every step can be rerun by hand):
  1. corpus     python -m data_prep.synth_corpus                  -> OUT/corpus/
  2. tokenizer  python -m holitok.train --config ... --config ...  -> OUT/tokenizer_runs/, exported to OUT/tokenizer
                (save_pretrained; `python -m holitok.quickstart` picks up outputs/demo/tokenizer by itself)
  3. latents    python -m data_prep.extract_latents                -> OUT/latents/train/
  4. unified    python train_unified.py --config ... --resume       -> OUT/unified/final/
  5. refine     only in presets with a `refine:` section: python -m data_prep.train_aligner, python -m
                data_prep.align_latents, then train_unified.py continued from step 4 -> OUT/refine/final/
  6. report     python -m eval.report (Whisper-base + resemblyzer)  -> OUT/report/ (report.md, .json, spectrograms)
  7. demo       python -m demo.app --model OUT/unified/final (OUT/refine/final) --tokenizer OUT/tokenizer
A finished step is skipped; an interrupted one resumes (every underlying command resumes by itself). The settings
of each finished step are recorded in OUT/pipeline_state.json, and rerunning into the same OUT with other settings
is refused (so a `--preset tiny` run never silently reuses a `default` model). Preset files: configs/demo/*.yaml.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from holitok.dataclass_config import read_config

from .config import REPO_ROOT, PipelineConfig, load_pipeline_config

STEPS = ("corpus", "tokenizer", "latents", "unified", "refine", "report")
STATE_FILE = "pipeline_state.json"


class PipelineError(RuntimeError):
    """A step failed or the output folder belongs to another configuration; the message says what to do."""


def set_dotted(doc: dict, dotted: str, value: Any) -> None:
    """doc["a"]["b"] = value for "a.b", creating sections; refuses to descend into a non-mapping."""
    node = doc
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PipelineError(f"cannot set {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _named_configs(section: Any) -> list[dict]:
    """The contents of every `config: some.yaml` a preset section names (depth first, in order)."""
    found = []
    if isinstance(section, dict):
        for key, value in section.items():
            if key == "config" and isinstance(value, str):
                found.append(read_config(REPO_ROOT / value))
            else:
                found += _named_configs(value)
    elif isinstance(section, list):
        for value in section:
            found += _named_configs(value)
    return found


def _format_seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class DemoPipeline:
    """Runs the steps of `config` into `out`; `log` receives progress lines."""

    def __init__(self, config: PipelineConfig, out: str | Path, preset: str, threads: int | None = None,
                 log: Callable[[str], None] = print, quiet_subprocesses: bool = False):
        self.config, self.preset, self.threads, self.log = config, preset, threads, log
        self.out = Path(out).resolve()
        self.refine_dir, self.aligner_dir = self.out / "refine", self.out / "aligner"  # step 5's (refine presets)
        self.quiet = quiet_subprocesses
        self.state_path = self.out / STATE_FILE
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"steps": {}}

    # ---- paths ---------------------------------------------------------------------------------------------------
    @property
    def corpus_dir(self) -> Path:
        return self.out / "corpus"

    @property
    def second_corpus_dir(self) -> Path | None:
        """corpus.second_vocabulary's corpus (None without one)."""
        vocabulary = self.config.corpus.second_vocabulary
        return None if vocabulary is None else self.out / f"corpus_{vocabulary}"

    @property
    def tokenizer_dir(self) -> Path:
        return self.out / "tokenizer"

    @property
    def latents_dir(self) -> Path:
        return self.out / "latents" / "train"

    @property
    def speed_latents_dir(self) -> Path:
        return self.out / "latents" / "train_speed"

    @property
    def channel_latents_dir(self) -> Path | None:
        """latents.asr_channel_*'s store (None without one)."""
        latents = self.config.latents
        if latents.asr_channel_bandwidths_khz is None and latents.asr_channel_snr_db is None:
            return None
        return self.out / "latents" / "train_channel"

    @property
    def second_latents_dir(self) -> Path | None:
        vocabulary = self.config.corpus.second_vocabulary
        return None if vocabulary is None else self.out / "latents" / f"train_{vocabulary}"

    @property
    def unified_dir(self) -> Path:
        return self.out / "unified"

    @property
    def model_dir(self) -> Path:
        return self.out / self.config.final_model

    @property
    def examples_path(self) -> Path:
        return self.out / "examples.json"

    # ---- state -----------------------------------------------------------------------------------------------------
    def fingerprints(self) -> dict[str, str]:
        """Each step's settings hash, chained so that changing a step invalidates everything after it. A section
        that names training YAMLs (tokenizer stages, the unified run) hashes what those files say too (read the one
        way, `inherit:` and `model: file.yaml` resolved), so editing a stage YAML reruns its step."""
        prints, previous = {}, ""
        for step in STEPS:
            if step == "refine" and not self.config.refine.enabled:
                prints[step] = previous  # no such stage: the report's print stays what it was before refine existed
                continue
            section = self.config.section(step)
            previous = prints[step] = _fingerprint(previous, section, _named_configs(section))
        return prints

    def _save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.state_path)

    def check_compatible(self) -> None:
        prints = self.fingerprints()
        for step, record in self.state["steps"].items():
            if step in prints and record.get("fingerprint") != prints[step]:
                what = (f"preset {record.get('preset')!r}, now {self.preset!r}" if record.get("preset") != self.preset
                        else f"the {self.preset!r} preset's settings changed since")
                raise PipelineError(
                    f"{self.out} holds a '{step}' step built with other settings ({what}). Use another --out "
                    f"(e.g. --out outputs/demo_{Path(self.preset).stem}) or delete {self.out} to rebuild.")

    # ---- running commands ----------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch

        if not torch.cuda.is_available():
            # Multi-process runs on a CPU-only machine must say so, or accelerate starts independent copies.
            env["ACCELERATE_USE_CPU"] = "1"
        env["GRADIO_ANALYTICS_ENABLED"] = "False"
        return env

    def _run(self, command: list[str], what: str) -> None:
        shown = " ".join(str(c) for c in command).replace(sys.executable, "python")
        self.log(f"    $ {shown}")
        result = subprocess.run([str(c) for c in command], cwd=REPO_ROOT, env=self._env(), text=True,
                                capture_output=self.quiet)
        if result.returncode != 0:
            tail = ""
            if self.quiet:
                tail = "\n" + "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise PipelineError(f"{what} failed (exit {result.returncode}); rerun `python -m demo.pipeline` with the "
                                f"same flags to resume after fixing the cause.{tail}")

    # ---- steps -----------------------------------------------------------------------------------------------------
    def step_corpus(self) -> None:
        corpus = self.config.corpus
        cmd = [sys.executable, "-m", "data_prep.synth_corpus", "--preset", corpus.preset,
               "--workers", str(os.cpu_count() or 1)]
        if corpus.train_utterances_per_voice is not None:
            cmd += ["--train_utterances_per_voice", str(corpus.train_utterances_per_voice)]
        if corpus.train_sentence_pool is not None:
            cmd += ["--train_sentence_pool", str(corpus.train_sentence_pool)]
        self._run(cmd + ["--out", self.corpus_dir]
                  + (["--vocabulary", corpus.vocabulary] if corpus.vocabulary is not None else []),
                  "building the synthetic corpus")
        if self.second_corpus_dir is not None:
            self._run(cmd + ["--out", self.second_corpus_dir, "--vocabulary", corpus.second_vocabulary],
                      f"building the second corpus ({corpus.second_vocabulary} vocabulary)")

    def tokenizer_stage_configs(self) -> list[Path]:
        """Writes the stage YAMLs with this run's data and output folders (OUT/configs/tokenizer_stage<k>.yaml)."""
        paths, previous_output = [], None
        for stage in self.config.tokenizer.stages:
            doc = read_config(REPO_ROOT / stage.config)
            # Folders are numbered by position in the chain: two steps may share a stage type (the decoder
            # fine-tuning after Stage II is a stage-2 config too).
            number = len(paths) + 1
            doc["output_dir"] = str(self.out / "tokenizer_runs" / f"stage{number}")
            if previous_output is not None:
                doc["init_from"] = previous_output
            elif "init_from" in doc:
                raise PipelineError(f"{stage.config} is the first stage but starts from {doc['init_from']}")
            data = doc.setdefault("data", {})
            data["train"] = str(self.corpus_dir / "train.jsonl")
            if "valid" in data:
                data["valid"] = str(self.corpus_dir / "test_seen_voice.jsonl")
            for key, value in stage.set.items():
                set_dotted(doc, key, value)
            path = self.out / "configs" / f"tokenizer_stage{number}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# written by demo.pipeline from {stage.config} (preset {self.preset})\n"
                            + yaml.safe_dump(doc, sort_keys=False))
            paths.append(path)
            previous_output = doc["output_dir"]
        return paths

    def launcher(self, processes: int) -> list[str]:
        """How to start a trainer: this Python for one process, `accelerate launch --multi_gpu` (gloo on CPU) for more."""
        if processes <= 1:
            return [sys.executable]
        import socket

        with socket.socket() as sock:  # a free port for the process group's rendezvous, on loopback only
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]

    def step_tokenizer(self) -> None:
        configs = self.tokenizer_stage_configs()
        cmd = self.launcher(self.config.tokenizer.processes) + ["-m", "holitok.train"]
        for path in configs:
            cmd += ["--config", path]
        self._run(cmd, "tokenizer training")
        last = yaml.safe_load(configs[-1].read_text())["output_dir"]
        exported = Path(last) / "final" / "holitok"  # the last stage's HoliTok.save_pretrained folder
        partial = self.tokenizer_dir.with_name("tokenizer.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(exported, partial)
        from holitok import HoliTok

        HoliTok.from_pretrained(partial, device="cpu")  # refuse to publish a folder that does not load
        shutil.rmtree(self.tokenizer_dir, ignore_errors=True)
        partial.rename(self.tokenizer_dir)
        self.log(f"    exported {exported} -> {self.tokenizer_dir}")
        self.check_tokenizer()

    def check_tokenizer(self, utterances: int = 3) -> dict:
        """Resynthesis quality on a few held-out sentences, printed so a newcomer sees what the tokenizer learned."""
        from holitok import HoliTok

        from eval.reconstruction import evaluate_manifest, format_summary

        codec = HoliTok.from_pretrained(self.tokenizer_dir, device="cpu").eval()
        report = evaluate_manifest(self.corpus_dir / "test_seen_voice.jsonl", codec, limit=utterances,
                                   progress=False)
        self.log("    tokenizer check (python -m eval.reconstruction): " + format_summary(report).replace("\n", "\n    "))
        return report["mean"]

    def step_latents(self) -> None:
        self._run([sys.executable, "-m", "data_prep.extract_latents", "--manifest", self.corpus_dir / "train.jsonl",
                   "--tokenizer", self.tokenizer_dir, "--out", self.latents_dir,
                   "--batch_size", str(self.config.latents.batch_size),
                   "--shard_size", str(self.config.latents.shard_size)], "latent extraction")
        speed = self.config.latents.asr_speed_range
        if speed is not None:
            self._run([sys.executable, "-m", "data_prep.extract_latents", "--manifest", self.corpus_dir / "train.jsonl",
                       "--tokenizer", self.tokenizer_dir, "--out", self.speed_latents_dir,
                       "--batch_size", str(self.config.latents.batch_size),
                       "--shard_size", str(self.config.latents.shard_size), "--speed_range", *map(str, speed),
                       "--speed_seed", str(self.config.latents.asr_speed_seed)],
                      "latent extraction, speed-perturbed copy for ASR")
        if self.second_corpus_dir is not None:
            self._run([sys.executable, "-m", "data_prep.extract_latents",
                       "--manifest", self.second_corpus_dir / "train.jsonl", "--tokenizer", self.tokenizer_dir,
                       "--out", self.second_latents_dir, "--batch_size", str(self.config.latents.batch_size),
                       "--shard_size", str(self.config.latents.shard_size)], "latent extraction, second corpus")
        latents = self.config.latents
        if self.channel_latents_dir is not None:
            source = self.second_corpus_dir if self.second_corpus_dir is not None else self.corpus_dir
            self._run([sys.executable, "-m", "data_prep.extract_latents", "--manifest", source / "train.jsonl",
                       "--tokenizer", self.tokenizer_dir, "--out", self.channel_latents_dir,
                       "--batch_size", str(latents.batch_size), "--shard_size", str(latents.shard_size),
                       "--speed_seed", str(latents.asr_speed_seed + 1),
                       *(["--speed_range", *map(str, latents.asr_speed_range)] if latents.asr_speed_range else []),
                       *(["--bandwidths_khz", *map(str, latents.asr_channel_bandwidths_khz)]
                         if latents.asr_channel_bandwidths_khz else []),
                       *(["--snr_db", *map(str, latents.asr_channel_snr_db)] if latents.asr_channel_snr_db else [])],
                      "latent extraction, channel-perturbed copy for ASR")

    def unified_config(self) -> Path:
        # Read the one way (inherit, `model: file.yaml` copied in so presets can edit it): holitok.dataclass_config.
        doc = read_config(REPO_ROOT / self.config.unified.config)
        # The unified model reads the tokenizer's latents: their width is the tokenizer's, never a second setting.
        from holitok.train.config import load_config

        tokenizer = load_config(self.tokenizer_stage_configs()[-1]).model.build()
        doc["model"]["latent_dim"] = tokenizer.latent_dim + tokenizer.pitch_channels  # pitch latents come after
        doc["model"]["pitch_channels"] = tokenizer.pitch_channels
        doc.setdefault("data", {})["datasets"] = [
            {"name": "synth", "latents": str(self.latents_dir), "tasks": ["tts", "asr"]}]
        if self.second_latents_dir is not None:  # each store weighs by its size, so the two corpora share evenly
            doc["data"]["datasets"].append({"name": f"synth_{self.config.corpus.second_vocabulary}",
                                            "latents": str(self.second_latents_dir), "tasks": ["tts", "asr"]})
        if self.config.latents.asr_speed_range is not None:
            doc["data"]["datasets"].append({"name": "synth_speed", "latents": str(self.speed_latents_dir),
                                            "tasks": ["asr"]})
        if self.channel_latents_dir is not None:
            doc["data"]["datasets"].append({"name": "synth_channel", "latents": str(self.channel_latents_dir),
                                            "tasks": ["asr"]})
        doc.setdefault("train", {})["output_dir"] = str(self.unified_dir)
        for key, value in self.config.unified.set.items():
            set_dotted(doc, key, value)
        path = self.out / "configs" / "train_unified.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# written by demo.pipeline from {self.config.unified.config} (preset {self.preset})\n"
                        + yaml.safe_dump(doc, sort_keys=False))
        return path

    def step_unified(self) -> None:
        self._run(self.launcher(self.config.unified.processes)
                  + [REPO_ROOT / "train_unified.py", "--config", self.unified_config(), "--resume"],
                  "unified model training")

    def refine_config(self) -> Path:
        """Step 4's training YAML with the preset's `refine.set` on top, warm-started from step 4's model (every tensor
        it has; what the refinement adds, e.g. a pace head, starts fresh) and reading its text tokenizer."""
        from safetensors import safe_open

        doc = yaml.safe_load(self.unified_config().read_text())
        first = self.unified_dir / "final"
        with safe_open(str(first / "model.safetensors"), framework="pt") as weights:
            prefixes = sorted({key.split(".")[0] + ("." if "." in key else "") for key in weights.keys()})
        doc["model"].setdefault("text_tokenizer", {})["path"] = str(first / "text_tokenizer" / "spm.model")
        doc["train"].update(output_dir=str(self.refine_dir), init_dit_from=str(first), init_dit_prefixes=prefixes)
        for key, value in self.config.refine.set.items():
            set_dotted(doc, key, value)
        path = self.out / "configs" / "train_refine.yaml"
        path.write_text(f"# written by demo.pipeline from {self.out / 'configs' / 'train_unified.yaml'} + refine.set "
                        f"(preset {self.preset})\n" + yaml.safe_dump(doc, sort_keys=False))
        return path

    def step_refine(self) -> None:
        refine = self.config.refine
        if not refine.enabled:
            self.log("    no refine stage in this preset (its model is step 4's)")
            return
        text_tokenizer = self.unified_dir / "final" / "text_tokenizer"
        threads = str(max(1, self.config.unified.processes))  # the cores the trainers use, for one process
        if not (self.aligner_dir / "model.safetensors").is_file():
            self._run([sys.executable, "-m", "data_prep.train_aligner", "--latents", self.latents_dir,
                       "--text_tokenizer", text_tokenizer, "--out", self.aligner_dir,
                       "--steps", str(refine.aligner_steps), "--lr", str(refine.aligner_lr),
                       "--held_out", str(refine.aligner_held_out), "--threads", threads],
                      "aligner training")
        for store in [self.latents_dir] + ([self.second_latents_dir] if self.second_latents_dir is not None else []):
            self._run([sys.executable, "-m", "data_prep.align_latents", "--latents", store,
                       "--aligner", self.aligner_dir, "--threads", threads], f"forced alignment of {store.name}")
        self._run(self.launcher(self.config.unified.processes)
                  + [REPO_ROOT / "train_unified.py", "--config", self.refine_config(), "--resume"],
                  "refine training")

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    def step_report(self) -> None:
        per_voice = self.config.report.per_voice
        if per_voice <= 0:
            self.log("    listener report skipped (report.per_voice is 0 in this preset)")
            self.report_dir.mkdir(parents=True, exist_ok=True)
            (self.report_dir / "report.md").write_text("skipped by the preset (report.per_voice: 0)\n")
            return
        self._run([sys.executable, "-m", "eval.report", "--corpus", self.corpus_dir, "--tokenizer", self.tokenizer_dir,
                   "--model", self.model_dir, "--out", self.report_dir, "--per_voice", str(per_voice),
                   *(["--per_unseen_voice", str(self.config.report.per_unseen_voice)]
                     if self.config.report.per_unseen_voice is not None else [])],
                  "the listener report (python -m eval.report; needs the judges extra)")

    def is_done(self, step: str) -> bool:
        outputs = {
            "corpus": [self.corpus_dir / "corpus.json", self.corpus_dir / "train.jsonl"] + (
                [self.second_corpus_dir / "corpus.json"] if self.second_corpus_dir is not None else []),
            "tokenizer": [self.tokenizer_dir / "config.json"],
            "latents": [self.latents_dir / "index.json"] + (
                [self.speed_latents_dir / "index.json"] if self.config.latents.asr_speed_range is not None else []) + (
                [self.second_latents_dir / "index.json"] if self.second_latents_dir is not None else []) + (
                [self.channel_latents_dir / "index.json"] if self.channel_latents_dir is not None else []),
            "unified": [self.unified_dir / "final" / "config.json", self.unified_dir / "final" / "model.safetensors"],
            "refine": ([self.model_dir / "config.json", self.model_dir / "model.safetensors"]
                       if self.config.refine.enabled else []),
            "report": [self.report_dir / "report.md"],
        }[step]
        recorded = self.state["steps"].get(step, {})
        return recorded.get("done", False) and all(p.exists() for p in outputs)

    def write_examples(self, per_voice: int = 2) -> list[dict]:
        """Held-out voices' prompts and target sentences from the corpus' zero-shot list, for the demo's examples."""
        from eval.seed_tts import read_meta
        from holitok_slm.model.unified import text_tokenizer_dir
        from holitok_slm.text_tokenizer import TextTokenizer

        from .app import unknown_characters

        tokenizer = TextTokenizer.load(text_tokenizer_dir(self.model_dir))
        meta = self.corpus_dir / "seed_tts_eval" / "meta.lst"
        items, _ = read_meta(meta) if meta.is_file() else ([], [])
        chosen, counts = [], {}
        for item in items:
            if unknown_characters(tokenizer, item.prompt_text + item.target_text):
                continue  # a tiny corpus' tokenizer may lack some letters; show only examples the model can say
            if counts.get(item.prompt_wav, 0) < per_voice:
                counts[item.prompt_wav] = counts.get(item.prompt_wav, 0) + 1
                chosen.append({"prompt_wav": item.prompt_wav, "prompt_text": item.prompt_text,
                               "target_text": item.target_text})
        self.examples_path.write_text(json.dumps(chosen, indent=1))
        return chosen

    def run(self) -> dict[str, float]:
        """Runs every unfinished step; returns the seconds each step took in this call (0 for skipped ones)."""
        self.check_compatible()
        self.out.mkdir(parents=True, exist_ok=True)
        prints = self.fingerprints()
        timings: dict[str, float] = {}
        total_start = time.perf_counter()
        for index, step in enumerate(STEPS, 1):
            header = f"[{index}/{len(STEPS)}] {step}"
            if self.is_done(step):
                recorded = self.state["steps"][step].get("seconds")
                self.log(f"{header}: already done"
                         + (f" (took {_format_seconds(recorded)} when it ran)" if recorded else "") + ", skipped")
                timings[step] = 0.0
                continue
            self.log(f"{header} ...")
            start = time.perf_counter()
            getattr(self, f"step_{step}")()
            elapsed = time.perf_counter() - start
            timings[step] = elapsed
            self.state["steps"][step] = {"done": True, "seconds": round(elapsed, 1), "fingerprint": prints[step],
                                         "preset": self.preset, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
            self._save_state()
            self.log(f"{header}: done in {_format_seconds(elapsed)}")
        self.write_examples()
        total = time.perf_counter() - total_start
        self.log("timings: " + ", ".join(f"{s} {_format_seconds(self.state['steps'][s]['seconds'])}" for s in STEPS)
                 + f"; this call {_format_seconds(total)}")
        return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default",
                        help="smoke | tiny | default | chars256 (configs/demo/<name>.yaml), or a YAML path")
    parser.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    parser.add_argument("--no-launch", action="store_true", help="train only, do not start the Gradio demo")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per step (default 1: on a busy or small machine more threads made the "
                             "tokenizer's training steps up to 25x slower, see docs/demo.md)")
    args = parser.parse_args(argv)
    config = load_pipeline_config(args.preset)
    print(f"demo pipeline, preset {args.preset}: {config.description}".rstrip(), flush=True)
    pipeline = DemoPipeline(config, args.out, args.preset, args.threads,
                            log=lambda line: print(line, flush=True))
    try:
        pipeline.run()
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to resume where it stopped", file=sys.stderr)
        return 130
    relaunch = f"python -m demo.app --model {pipeline.model_dir} --tokenizer {pipeline.tokenizer_dir}"
    if args.no_launch:
        print(f"trained. Start the demo with:\n  {relaunch}")
        return 0
    from .app import DemoService, launch, load_examples

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    service = DemoService.from_dirs(pipeline.model_dir, pipeline.tokenizer_dir)
    service.info["note"] = f"Trained by `python -m demo.pipeline --preset {args.preset}`."
    print(f"[demo] http://127.0.0.1:{args.port}/  (Ctrl+C stops it; later: {relaunch} --port {args.port})",
          flush=True)
    launch(service, args.port, load_examples(pipeline.examples_path), block=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
