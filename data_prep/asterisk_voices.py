"""Human voices for tokenizer training from Debian's asterisk prompt packages: four speakers (French, two Italian,
Russian; none of them the English test speaker of data_prep.asterisk_prompts), decoded to wav with a JSONL manifest,
and optionally mixed into a corpus' training manifest at a chosen share.

    apt-get install asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722 \
        asterisk-prompt-it-menardi-wav
    python -m data_prep.asterisk_voices --out outputs/human --mix outputs/corpus/train.jsonl --share 0.25

Every corpus voice is a synthesiser; these are the other human voices Debian ships as wav or G.722 (~95 min; two more
sets come as GSM only and are left out). The text of the prompts is not English, so they serve the tokenizer, whose
decoder reads no text, and not the unified model. Allison Smith, who speaks the English test prompts, also recorded
the Spanish set: her folders are refused. G.722 files (16 kHz wideband) are decoded with the `G722` package (PyPI
`g722`); wav files are read where they lie.
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf

from .manifest import ManifestRecord, read_manifest, write_manifest

SOUNDS = Path("/usr/share/asterisk/sounds")
# speaker name in the manifest -> folder under SOUNDS (the packages' own speaker-named folders)
VOICES = {
    "asterisk_june_fr": "fr_CA_f_June",
    "asterisk_carlo_it": "it_IT_m_Carlo",
    "asterisk_ivrvoice_ru": "ru_RU_f_IvrvoiceRU",
    "asterisk_menardi_it": "it_IT_f_Menardi",
}
TEST_SPEAKER_FOLDERS = ("en_US_f_Allison", "es_MX_f_Allison")  # data_prep.asterisk_prompts' speaker
G722_RATE, G722_BITRATE = 16000, 64000


def decode_g722(path: str | Path) -> np.ndarray:
    """A raw 64 kbit/s G.722 file (asterisk's .g722) as 16 kHz int16 samples."""
    try:
        import G722
    except ImportError as err:
        raise ImportError("decoding .g722 needs the G722 module: pip install g722 (in the train extra)") from err
    codec = G722.G722(G722_RATE, G722_BITRATE, use_numpy=False)
    data = Path(path).read_bytes()
    if not data:
        raise ValueError(f"{path} is empty")
    return np.frombuffer(codec.decode(data), dtype=np.int16).copy()


def collect(out: Path, voices: dict[str, str], sounds: Path = SOUNDS, min_seconds: float = 1.0) -> list[ManifestRecord]:
    """One record per recording of each voice at least min_seconds long; .g722 files are decoded to OUT/audio."""
    records = []
    for speaker, folder in voices.items():
        if folder in TEST_SPEAKER_FOLDERS:
            raise ValueError(f"{folder} is the test speaker of data_prep.asterisk_prompts; it cannot be trained on")
        root = sounds / folder
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is missing: apt-get install the asterisk package that holds {folder} "
                                    "(see this module's docstring)")
        language = folder[:2]  # the folders are named LANGUAGE_REGION_SEX_NAME
        files = sorted(p for p in root.rglob("*") if p.suffix in (".g722", ".wav"))
        if not files:
            raise FileNotFoundError(f"{root} holds no .g722 or .wav recordings")
        for path in files:
            if path.stat().st_size == 0:  # a few prompts ship as empty files
                continue
            name = path.relative_to(root).with_suffix("")
            if path.suffix == ".g722":
                wav = out / "audio" / folder / name.with_suffix(".wav")
                if not wav.is_file():
                    wav.parent.mkdir(parents=True, exist_ok=True)
                    sf.write(str(wav), decode_g722(path), G722_RATE, subtype="PCM_16")
            else:
                wav = path
            duration = sf.info(str(wav)).duration
            if duration < min_seconds:
                continue
            # No text: the decoder reads none, and latent extraction skips an empty transcript with its reason.
            records.append(ManifestRecord(id=f"{speaker}-{str(name).replace('/', '-')}", audio=str(wav.resolve()),
                                          duration=round(duration, 4), text="", language=language, speaker=speaker))
    return records


def mix(corpus_train: Path, human: list[ManifestRecord], share: float, seed: int = 0) -> tuple[list[str], int]:
    """The corpus' manifest lines (absolute audio paths) plus the human records repeated so that they make about
    `share` of the lines, shuffled; returns the lines and the repeat count."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must lie in (0, 1), got {share}")
    corpus = read_manifest(corpus_train)
    if not corpus or not human:
        raise ValueError(f"nothing to mix: {len(corpus)} corpus and {len(human)} human records")
    rows = [json.dumps(asdict(r), ensure_ascii=False) for r in corpus]  # read_manifest made the paths absolute
    repeats = max(1, round(share / (1.0 - share) * len(corpus) / len(human)))
    rows += [json.dumps(asdict(r), ensure_ascii=False) for r in human] * repeats
    random.Random(seed).shuffle(rows)
    return rows, repeats


def build(out: str | Path, voices: dict[str, str] = VOICES, sounds: Path = SOUNDS, min_seconds: float = 1.0,
          corpus_train: str | Path | None = None, share: float = 0.25, seed: int = 0) -> dict:
    """Writes OUT/train.jsonl (the human recordings), OUT/mix.jsonl when corpus_train is given, OUT/corpus.json."""
    out = Path(out)
    records = collect(out, voices, sounds, min_seconds)
    write_manifest(records, out / "train.jsonl")
    per_voice = {s: {"utterances": sum(r.speaker == s for r in records),
                     "minutes": round(sum(r.duration for r in records if r.speaker == s) / 60, 1)} for s in voices}
    summary = {"source": f"{sounds} (Debian asterisk prompt packages)", "voices": per_voice,
               "min_seconds": min_seconds, "utterances": len(records),
               "hours": round(sum(r.duration for r in records) / 3600, 3)}
    if corpus_train is not None:
        rows, repeats = mix(Path(corpus_train), records, share, seed)
        (out / "mix.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        summary["mix"] = {"corpus_train": str(corpus_train), "share": share, "repeats": repeats, "lines": len(rows),
                          "seed": seed}
    (out / "corpus.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--voices", nargs="+", choices=sorted(VOICES), default=sorted(VOICES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--sounds", type=Path, default=SOUNDS, help="the folder holding the speakers' folders")
    parser.add_argument("--min_seconds", type=float, default=1.0, help="shorter recordings are left out")
    parser.add_argument("--mix", dest="corpus_train", help="a corpus' train.jsonl to mix the human recordings into")
    parser.add_argument("--share", type=float, default=0.25, help="the human recordings' share of the mix")
    parser.add_argument("--seed", type=int, default=0, help="the mix's shuffle")
    args = parser.parse_args(argv)
    summary = build(args.out, {v: VOICES[v] for v in args.voices}, args.sounds, args.min_seconds, args.corpus_train,
                    args.share, args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
