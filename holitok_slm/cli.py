"""Command line `holitok-slm tts | asr | serve`: voice-cloning TTS and batched ASR with one unified model, and its demo.

    holitok-slm tts --text "Hello there." --prompt-audio voice.wav [--prompt-text "..."] --out tts_out [--stream]
    holitok-slm asr a.wav b.flac | --dir clips/ | --manifest m.jsonl  --out transcripts.jsonl [--batch-size 8]
                    [--beam-size N] [--ctc-weight W]
    holitok-slm serve [--model DIR --tokenizer DIR] [--host 127.0.0.1] [--port 7860] [--concurrency 1]
        [--queue-size 8] [--max-upload-mb 16] [--max-audio-seconds 30] [--time-limit 120]

Without --model/--tokenizer every command uses the release this repository ships (weights/demo, checked against its
manifest). Audio in any soundfile-readable format, sample rate and channel count is mixed to mono and resampled to
48 kHz. Bad input (missing/corrupt/empty/silent/NaN audio, audio shorter than one 160 ms patch or longer than 30 s,
empty text or characters the model never saw, out-of-range sampling options, malformed manifest, a folder that is
not a model or holds a broken one, a tokenizer that does not fit the model, an output path that cannot be written)
prints one line `error: ...` on stderr and exits with status 2, like `holitok`. The checks are those of the Python
API and the demo (holitok_slm.infer.inputs), with the demo's limits (demo/limits.py).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Iterator

from demo.limits import DemoLimits, add_limit_flags, limits_from_args

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
RESULTS = "results.jsonl"
SFC_UPDATE_HEADER_NOW = 0x1060  # libsndfile command: rewrite the header for the samples written so far


class CliError(ValueError):
    """Bad input; the message is printed as one line."""


# ---- parser --------------------------------------------------------------------------------------------------------
def _model_flags(p: argparse.ArgumentParser, device: bool = True) -> None:
    p.add_argument("--model", help="UnifiedModel folder (default: the shipped release weights/demo/unified)")
    p.add_argument("--tokenizer", help="HoliTok folder the model was trained with (default: weights/demo/tokenizer)")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="holitok-slm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tts", help="text -> speech in the voice of a prompt (one 48 kHz wav per sentence)")
    _model_flags(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a sentence to speak (repeat for more)")
    src.add_argument("--text-file", help="UTF-8 text file, one sentence per line (blank lines are skipped)")
    src.add_argument("--manifest", help="JSONL with id and text per line, optionally prompt_audio, prompt_text, "
                     "instruction (and the other data_prep manifest fields, which are ignored)")
    p.add_argument("--prompt-audio", help="the voice to clone (any rate/channels; at least one 160 ms patch)")
    p.add_argument("--prompt-text", help="what the prompt says (default: the model transcribes the prompt itself)")
    p.add_argument("--instruction", help="optional style instruction")
    p.add_argument("--cfg-strength", "--cfg-scale", type=float, default=None, dest="cfg_strength",
                   help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--steps", "--euler-steps", type=int, default=None, dest="steps",
                   help="Euler steps of the flow head per patch (default: the model's)")
    p.add_argument("--temperature", type=float, default=None, help="initial noise scale (default: the model's)")
    p.add_argument("--pitch-temperature", type=float, default=None, dest="pitch_temperature",
                   help="initial noise scale of a pitch-latent model's pitch channels (default: the model's)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="hard cap on each sentence's length (on top of the text-length bound)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; every sentence is generated with it (0)")
    p.add_argument("--out", required=True, help="output folder: ID.wav per sentence and results.jsonl")
    p.add_argument("--stream", action="store_true",
                   help="write each wav as its patches are generated (a valid wav after every chunk)")

    p = sub.add_parser("asr", help="speech -> text, batched")
    _model_flags(p)
    p.add_argument("files", nargs="*", help="audio files")
    p.add_argument("--dir", help=f"a folder: every {'/'.join(AUDIO_SUFFIXES)} file below it")
    p.add_argument("--manifest", help="JSONL with id and audio per line (paths relative to the manifest's folder)")
    p.add_argument("--out", required=True, help="FILE.jsonl ({id, audio, text} per line) or FILE.txt (id<TAB>text)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--beam-size", type=int, help="beams (1 = greedy; default: the checkpoint's search)")
    p.add_argument("--ctc-weight", type=float,
                   help="weight 0-1 of the model's CTC prefix score in the search (default: the checkpoint's)")

    p = sub.add_parser("serve", help="the Gradio demo (voice cloning + transcription) on a model")
    _model_flags(p, device=False)
    p.add_argument("--examples", help="JSON list of {prompt_wav, prompt_text, target_text} to show (with --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    add_limit_flags(p)
    return parser


# ---- model ---------------------------------------------------------------------------------------------------------
def _load_error(flag: str, path, kind: str, err: Exception) -> CliError:
    return CliError(f"{flag} {path} is not a usable {kind} folder: {_one_line(err)}")


def _load_pipeline(model_dir, tokenizer_dir, device: str | None = None):
    """SpeechPipeline with every loading failure named after the flag it came from."""
    import torch
    from holitok import HoliTok

    from .infer.pipeline import SpeechPipeline
    from .model.unified import UnifiedModel

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = UnifiedModel.from_pretrained(model_dir, map_location=device)
    except Exception as err:  # any failure to load means the folder is not a usable model
        raise _load_error("--model", model_dir, "UnifiedModel", err) from None
    try:
        codec = HoliTok.from_pretrained(tokenizer_dir, device=device)
    except Exception as err:
        raise _load_error("--tokenizer", tokenizer_dir, "HoliTok", err) from None
    try:
        return SpeechPipeline(model, codec)
    except ValueError as err:  # the tokenizer does not fit the model
        raise CliError(f"--tokenizer {tokenizer_dir} does not fit --model {model_dir}: {_one_line(err)}") from None


def _service(args):
    """(DemoService, examples): its checks and pipeline serve every command; the shipped release by default."""
    from demo.app import load_service
    from demo.release import DEFAULT_RELEASE

    if (args.model is None) != (args.tokenizer is None):
        raise CliError("give --model and --tokenizer together (the tokenizer the model was trained with), "
                       "or neither for the shipped release weights/demo")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    loader = partial(_load_pipeline, device=getattr(args, "device", None))
    release = DEFAULT_RELEASE if args.model is None else None
    return load_service(args.model, args.tokenizer, release, getattr(args, "examples", None), loader,
                        _limits(args))


def _limits(args) -> DemoLimits:
    """The demo's limits: `serve` takes them as flags; tts/asr check their audio and text against the defaults."""
    if args.command != "serve":
        return DemoLimits()
    try:
        return limits_from_args(args)
    except ValueError as err:
        raise CliError(str(err)) from None


# ---- inputs --------------------------------------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _file_name(item_id: str) -> str:
    return re.sub(r"[^\w.-]", "_", item_id).lstrip(".") or "_"


def _manifest_rows(path: str, required: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """(where, row) per non-blank line; audio paths resolved like data_prep.manifest.read_manifest (relative to the
    manifest's folder). Only the data_prep manifest fields (+ `extra`) are allowed: a typo must not lose data."""
    from data_prep.manifest import ManifestRecord, resolve_audio

    known = {f.name for f in fields(ManifestRecord)} | set(extra)
    lines = _read_text(path, "--manifest").splitlines()
    rows = []
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise CliError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise CliError(f"{where}: expected a JSON object, got {type(row).__name__}")
        unknown = sorted(set(row) - known)
        if unknown:
            raise CliError(f"{where}: unknown manifest keys {unknown} (known: {sorted(known)})")
        for key in required:
            if row.get(key) is None or not str(row[key]).strip():
                raise CliError(f"{where}: no {key!r}")
        for key in ("audio", "prompt_audio"):
            if row.get(key) is not None:
                row[key] = resolve_audio(str(row[key]), path)
        rows.append((where, row))
    if not rows:
        raise CliError(f"--manifest {path} has no rows")
    return rows


def _read_text(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{flag} {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CliError(f"{flag} {path}: cannot read it as UTF-8 text: {_one_line(err)}") from None


def _check_audio_file(path: str, where: str) -> float:
    """Header-only check before any model is loaded: the file exists, is readable audio, not empty and not longer
    than the limit -> seconds."""
    from holitok.audio import AudioError, audio_file_info

    prefix = "" if where == path else f"{where}: "
    try:
        frames, rate = audio_file_info(path, max_seconds=DemoLimits().max_prompt_seconds)
    except AudioError as err:
        raise CliError(f"{prefix}{err}") from None
    if frames == 0:
        raise CliError(f"{prefix}audio file {path} is empty (0 samples)")
    return frames / rate


def _unique_ids(ids: list[str], where: list[str]) -> None:
    seen: dict[str, str] = {}
    for item_id, place in zip(ids, where):
        name = _file_name(item_id)
        if name in seen:
            raise CliError(f"{place}: id {item_id!r} repeats {seen[name]} (ids name the output files)")
        seen[name] = place


def _open_partial(path: Path, flag: str):
    """Opens `path`.partial for writing (checks the output is writable before any work)."""
    partial_path = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a folder")
        return open(partial_path, "w", encoding="utf-8"), partial_path
    except OSError as err:
        raise CliError(f"{flag} {path} is not writable: {_one_line(err)}") from None


# ---- tts -----------------------------------------------------------------------------------------------------------
@dataclass
class _Sentence:
    id: str
    text: str
    where: str
    prompt_audio: str | None = None
    prompt_text: str | None = None
    instruction: str | None = None


def _sentences(args) -> list[_Sentence]:
    if args.text is not None:
        items = [_Sentence(f"{i:04d}", t, "--text" if len(args.text) == 1 else f"--text #{i}")
                 for i, t in enumerate(args.text, 1)]
    elif args.text_file is not None:
        lines = [(n, line) for n, line in enumerate(_read_text(args.text_file, "--text-file").splitlines(), 1)
                 if line.strip()]
        if not lines:
            raise CliError(f"--text-file {args.text_file} has no sentences (empty file)")
        items = [_Sentence(f"{i:04d}", line, f"{args.text_file}:{n}") for i, (n, line) in enumerate(lines, 1)]
    else:
        def field(row: dict, key: str) -> str | None:
            return None if row.get(key) is None else str(row[key])

        items = [_Sentence(field(row, "id"), field(row, "text"), where, field(row, "prompt_audio"),
                           field(row, "prompt_text"), field(row, "instruction"))
                 for where, row in _manifest_rows(args.manifest, ("id", "text"), extra=("instruction",))]
    if args.prompt_text is not None and args.prompt_audio is None:
        raise CliError("--prompt-text describes --prompt-audio, which is missing")
    for item in items:
        if not item.text.strip():
            raise CliError(f"{item.where}: the text to speak is empty")
        if item.prompt_audio is None:
            if args.prompt_audio is None:
                raise CliError("--prompt-audio is required (the voice to clone)" if args.manifest is None else
                               f"{item.where}: no prompt_audio, and no --prompt-audio to fall back on")
            item.prompt_audio = args.prompt_audio
            item.prompt_text = item.prompt_text if item.prompt_text is not None else args.prompt_text
        item.instruction = item.instruction if item.instruction is not None else args.instruction
    _unique_ids([i.id for i in items], [i.where for i in items])
    return items


def _tts_options(args) -> dict:
    from holitok_slm.infer.tts import check_options

    if args.max_seconds is not None and not args.max_seconds > 0:
        raise CliError(f"--max-seconds must be positive, got {args.max_seconds}")
    options = {k: v for k, v in (("steps", args.steps), ("cfg_strength", args.cfg_strength),
                                 ("temperature", args.temperature),
                                 ("pitch_temperature", args.pitch_temperature)) if v is not None}
    try:
        check_options(options)
    except ValueError as err:  # the message starts with the option's name: name it as its flag
        raise CliError("--" + str(err).replace("_", "-", 1)) from None
    return options


def _write_stream(path: Path, chunks: Iterator, sample_rate: int):
    """Writes the chunks of a `tts_stream` generator into a float wav whose header is rewritten after every chunk,
    so the file is a valid wav of everything generated so far at any time; returns the generator's TTSResult."""
    import soundfile as sf

    with sf.SoundFile(str(path), "w", sample_rate, 1, subtype="FLOAT", format="WAV") as f:
        while True:
            try:
                chunk = next(chunks)
            except StopIteration as stop:
                return stop.value
            f.write(chunk.detach().cpu().float().numpy())
            try:
                sf._snd.sf_command(f._file, SFC_UPDATE_HEADER_NOW, sf._ffi.NULL, 0)
            except AttributeError:  # another soundfile build: the header is only final at the end
                pass
            f.flush()


def cmd_tts(args) -> None:
    import soundfile as sf
    import torch
    from holitok.audio import save_audio

    options = _tts_options(args)
    sentences = _sentences(args)
    first_use: dict[str, _Sentence] = {}
    for s in sentences:
        first_use.setdefault(s.prompt_audio, s)
    prompt_label = {path: "--prompt-audio" if path == args.prompt_audio else f"{s.where}: prompt_audio"
                    for path, s in first_use.items()}
    for path, label in prompt_label.items():  # before the model is loaded: a typo fails at once
        _check_audio_file(path, label)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"--out {out} is not a writable folder: {_one_line(err)}") from None
    results, results_partial = _open_partial(out / RESULTS, "--out")
    try:
        service, _ = _service(args)
        pipeline = service.pipeline
        rate = pipeline.sample_rate
        if args.max_seconds is not None:
            patch_samples = pipeline.model.config.patch_size * pipeline.codec.hop_size
            options["patch_cap"] = max(1, int(args.max_seconds * rate // patch_samples))
        for s in sentences:  # every text is checked (characters the model knows, length) before any generation
            try:
                s.text = service.check_text(s.text, "text to speak")
                s.prompt_text = service.check_text(s.prompt_text, "prompt transcript", required=False)
                s.instruction = service.check_text(s.instruction, "instruction", required=False)
            except ValueError as err:
                raise CliError(f"{s.where}: {err}") from None
        prompts: dict[str, torch.Tensor] = {}
        transcripts: dict[str, str] = {}
        for s in sentences:
            if s.prompt_audio not in prompts:
                try:
                    prompts[s.prompt_audio] = service.check_audio(s.prompt_audio, "voice prompt")
                except ValueError as err:
                    raise CliError(f"{prompt_label[s.prompt_audio]} {s.prompt_audio}: {err}") from None
            if s.prompt_text is None:
                if s.prompt_audio not in transcripts:
                    with torch.no_grad():
                        transcripts[s.prompt_audio] = pipeline.asr(prompts[s.prompt_audio].numpy(), sample_rate=rate)
                    print(f"prompt {s.prompt_audio}: no transcript given, the model heard "
                          f"{transcripts[s.prompt_audio]!r}", flush=True)
                s.prompt_text = transcripts[s.prompt_audio]
        for s in sentences:
            path = out / f"{_file_name(s.id)}.wav"
            prompt = prompts[s.prompt_audio].numpy()
            with torch.no_grad():
                if args.stream:
                    chunks = pipeline.tts_stream(s.text, prompt, s.prompt_text, s.instruction, rate, args.seed,
                                                 chunk_patches=1, **options)
                    try:
                        result = _write_stream(path, chunks, rate)
                    except BaseException:
                        path.unlink(missing_ok=True)
                        raise
                    samples = sf.info(str(path)).frames
                else:
                    [(wav, result)] = pipeline.synthesize([s.text], [prompt], [s.prompt_text], [s.instruction],
                                                          rate, args.seed, **options)
                    save_audio(path, wav, rate)
                    samples = wav.numel()
            if samples == 0:
                print(f"warning: {s.id}: the model produced no audio", file=sys.stderr)
            row = {"id": s.id, "text": s.text, "path": str(path), "seconds": round(samples / rate, 4),
                   "ended_by_stop_head": bool(result.stopped_by_eos)}
            results.write(json.dumps(row, ensure_ascii=False) + "\n")
            results.flush()
            print(f"{s.id}: {row['seconds']:.2f} s ({'stop head' if row['ended_by_stop_head'] else 'length cap'})"
                  f" -> {path}", flush=True)
        results.close()
        os.replace(results_partial, out / RESULTS)
    finally:
        if not results.closed:
            results.close()
            results_partial.unlink(missing_ok=True)
    print(f"wrote {len(sentences)} wav(s) and {out / RESULTS}")


# ---- asr -----------------------------------------------------------------------------------------------------------
def _asr_items(args) -> list[tuple[str, str, str]]:
    """(id, path, where) per input, in the given order."""
    given = [name for name, on in (("FILES", bool(args.files)), ("--dir", args.dir is not None),
                                   ("--manifest", args.manifest is not None)) if on]
    if len(given) != 1:
        raise CliError("give the audio as FILES, --dir DIR or --manifest JSONL (exactly one of them)"
                       + (f"; got {' and '.join(given)}" if given else ""))
    if args.manifest is not None:
        items = [(str(row["id"]), row["audio"], where) for where, row in _manifest_rows(args.manifest, ("id", "audio"))]
    elif args.dir is not None:
        root = Path(args.dir)
        if not root.is_dir():
            raise CliError(f"--dir {root} is not a folder")
        paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not paths:
            raise CliError(f"--dir {root} holds no audio files ({' '.join(AUDIO_SUFFIXES)})")
        items = [(p.relative_to(root).with_suffix("").as_posix(), str(p), str(p)) for p in paths]
    else:
        stems = [Path(f).stem for f in args.files]
        ids = stems if len(set(stems)) == len(stems) else [str(Path(f).with_suffix("")) for f in args.files]
        items = [(i, f, f) for i, f in zip(ids, args.files)]
    if args.manifest is not None:
        _unique_ids([i for i, _, _ in items], [w for _, _, w in items])
    return items


def cmd_asr(args) -> None:
    import torch

    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = Path(args.out)
    if out.suffix not in (".jsonl", ".txt"):
        raise CliError(f"--out {out} must end in .jsonl or .txt")
    items = _asr_items(args)
    seconds = [_check_audio_file(path, where) for _, path, where in items]
    handle, partial_path = _open_partial(out, "--out")
    try:
        service, _ = _service(args)
        rate = service.pipeline.sample_rate
        order = sorted(range(len(items)), key=seconds.__getitem__)  # similar lengths share a batch: less padding
        texts: dict[int, str] = {}
        for start in range(0, len(order), args.batch_size):
            batch = order[start:start + args.batch_size]
            wavs = []
            for i in batch:
                try:
                    wavs.append(service.check_audio(items[i][1], "audio to transcribe").numpy())
                except ValueError as err:
                    raise CliError(f"{items[i][2]}: {err}") from None
            with torch.no_grad():
                texts.update(zip(batch, service.pipeline.asr(wavs, sample_rate=rate, beam_size=args.beam_size,
                                                             ctc_weight=args.ctc_weight)))
            print(f"transcribed {len(texts)}/{len(items)}", flush=True)
        for i, (item_id, path, _) in enumerate(items):
            text = " ".join(texts[i].split())
            line = (json.dumps({"id": item_id, "audio": path, "text": text}, ensure_ascii=False)
                    if out.suffix == ".jsonl" else f"{item_id}\t{text}")
            handle.write(line + "\n")
        handle.close()
        os.replace(partial_path, out)
    finally:
        if not handle.closed:
            handle.close()
            partial_path.unlink(missing_ok=True)
    print(f"wrote {len(items)} transcript(s) to {out}")


# ---- serve ---------------------------------------------------------------------------------------------------------
def cmd_serve(args) -> None:
    from demo import app as demo_app

    service, examples = _service(args)
    print(f"demo on http://{args.host}:{args.port}/  (Ctrl+C stops it)", flush=True)
    demo_app.launch(service, args.port, examples, block=True, host=args.host)


COMMANDS = {"tts": cmd_tts, "asr": cmd_asr, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    from holitok.audio import AudioError
    from holitok.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (CliError, AudioError, CheckpointError, FileNotFoundError, ValueError, KeyError, RuntimeError,
            OSError) as err:
        print(f"holitok-slm {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
