"""Text tokenizers for the supervision targets: UTF-8 bytes (no files needed) or a local Hugging Face tokenizer."""

from __future__ import annotations

from pathlib import Path


class ByteTokenizer:
    """Token ids 0..255 are UTF-8 bytes; 256 is end-of-text. Any text is representable, nothing is unknown."""

    vocab_size = 257
    eos_token_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A tokenizer saved with ``save_pretrained`` (e.g. Qwen2.5's), read from a local directory only."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        if not Path(path).is_dir():
            raise FileNotFoundError(f"supervision tokenizer directory not found: {path}")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if self.tokenizer.eos_token_id is None:
            raise ValueError(f"the tokenizer in {path} has no eos token; the supervision targets need one")
        self.eos_token_id = self.tokenizer.eos_token_id
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def load_text_tokenizer(spec: str) -> ByteTokenizer | HFTokenizer:
    return ByteTokenizer() if spec == "bytes" else HFTokenizer(spec)
