"""A real-speech test set from Debian's asterisk prompts (one US female speaker, 8 kHz telephone audio, or 16 kHz
with --wideband): material outside the synthetic corpus, laid out as a corpus folder that `python -m eval.report
--splits unseen` scores.

    apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en   # the recordings and their transcripts
    python -m data_prep.asterisk_prompts --out outputs/real/asterisk [--text_tokenizer weights/demo/unified/text_tokenizer]
    apt-get install asterisk-core-sounds-en-g722   # the same prompts at 16 kHz, for --wideband
    python -m eval.report --corpus outputs/real/asterisk --splits unseen --per_unseen_voice 20 ...

Kept: prompts whose transcript has at least --min_words words and no digits, tone tags or symbols (the models read
numbers as words), and, given --text_tokenizer, only characters that tokenizer spells (a model refuses the others).
The recordings stay where Debian put them (the manifest names them; eval.report resamples on reading); the split is
`test_unseen_voice.jsonl`: the speaker is in no training corpus of this project (docs/eval.md).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import soundfile as sf

from .asterisk_voices import G722_RATE, decode_g722
from .manifest import ManifestRecord, write_manifest

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SPEAKER = "asterisk_allison"
PLAIN_TEXT = re.compile(r"[A-Za-z][A-Za-z ,.?!'-]*")


def read_transcripts(path: Path) -> dict[str, str]:
    """`name: text` lines of the transcript file (comments and blank lines skipped), in file order."""
    opener = gzip.open if path.suffix == ".gz" else open
    out = {}
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(";") or ": " not in line:
                continue
            name, text = line.split(": ", 1)
            out[name.strip()] = " ".join(text.split())
    return out


def select_prompts(transcripts: dict[str, str], sounds: Path, min_words: int = 3, text_tokenizer=None,
                   suffix: str = ".wav") -> list[dict]:
    """The prompts that can be scored: a recording (NAME + suffix) exists, the text is plain words (PLAIN_TEXT),
    >= min_words words, and every character is one the text tokenizer spells (when one is given)."""
    kept = []
    for name, text in transcripts.items():
        wav = sounds / f"{name}{suffix}"
        if not wav.is_file() or not PLAIN_TEXT.fullmatch(text) or len(text.split()) < min_words:
            continue
        if text_tokenizer is not None and text_tokenizer.unknown_characters(text):
            continue
        kept.append({"name": name, "text": text, "wav": wav})
    return kept


def build(out: str | Path, sounds: Path = SOUNDS, transcripts: Path = TRANSCRIPTS, min_words: int = 3,
          text_tokenizer=None, limit: int | None = None, wideband: bool = False) -> dict:
    """Writes OUT/test_unseen_voice.jsonl and OUT/corpus.json; returns the summary. `wideband` reads the 16 kHz G.722
    recordings (asterisk-core-sounds-en-g722) instead of the 8 kHz wav ones, decoded to OUT/audio."""
    package = "asterisk-core-sounds-en-g722" if wideband else "asterisk-core-sounds-en-wav"
    if not transcripts.is_file() or not sounds.is_dir():
        raise FileNotFoundError(f"{transcripts} or {sounds} is missing: apt-get install {package} "
                                "asterisk-core-sounds-en (or pass --sounds / --transcripts)")
    prompts = select_prompts(read_transcripts(transcripts), sounds, min_words, text_tokenizer,
                             ".g722" if wideband else ".wav")[:limit]
    if len(prompts) < 2:
        raise ValueError(f"only {len(prompts)} prompt(s) kept; a report needs two (one prompts the other)")
    out = Path(out)
    if wideband:
        for p in prompts:
            wav = out / "audio" / f"{p['name']}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(wav), decode_g722(p["wav"]), G722_RATE, subtype="PCM_16")
            p["wav"] = wav
    records = [ManifestRecord(id=p["name"].replace("/", "-"), audio=str(p["wav"].resolve()),
                              duration=round(sf.info(str(p["wav"])).duration, 4), text=p["text"], language="en",
                              speaker=SPEAKER) for p in prompts]
    write_manifest(records, out / "test_unseen_voice.jsonl")
    summary = {"source": f"{sounds} + {transcripts} (Debian {package})", "speaker": SPEAKER,
               "min_words": min_words, "splits": {"test_unseen_voice": {
                   "utterances": len(records), "hours": round(sum(r.duration for r in records) / 3600, 4)}}}
    (out / "corpus.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sounds", type=Path, default=SOUNDS, help="folder of the prompt recordings (NAME.wav)")
    parser.add_argument("--transcripts", type=Path, default=TRANSCRIPTS, help="`name: text` lines (.gz or plain)")
    parser.add_argument("--min_words", type=int, default=3)
    parser.add_argument("--limit", type=int, help="keep at most this many prompts (file order)")
    parser.add_argument("--text_tokenizer", help="a model's text_tokenizer folder: keep texts it can spell")
    parser.add_argument("--wideband", action="store_true",
                        help="the 16 kHz G.722 recordings (asterisk-core-sounds-en-g722) instead of the 8 kHz wav ones")
    args = parser.parse_args(argv)
    tokenizer = None
    if args.text_tokenizer:
        from holitok_slm.text_tokenizer import TextTokenizer

        tokenizer = TextTokenizer.load(args.text_tokenizer)
    summary = build(args.out, args.sounds, args.transcripts, args.min_words, tokenizer, args.limit, args.wideband)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
