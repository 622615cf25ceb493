"""Every prompt template of the unified model (TTS, controllable TTS, ASR) and why it looks the way it does.

The paper's Table 5 (symbolic templates) is blank in our copy, so these are our design. Layouts, with
`A` = one audio patch embedding (the token id there is <|audio_pad|>, replaced by the audio embedding):

    TTS                 <|task_tts|> text <|audio_start|> A A A ... A
    controllable TTS    <|task_tts|> <|instruct_start|> instruction <|instruct_end|> text <|audio_start|> A ... A
    ASR                 <|task_asr|> <|audio_start|> A A ... A <|audio_end|> transcript <|text_end|>

Why:
- A leading task tag tells the shared backbone which direction the sequence runs before it sees any
  content; TTS and ASR sequences otherwise both contain text and audio and would be ambiguous at the start.
- TTS puts all text before the audio (no interleaving): the LLM sees the full sentence before the first
  patch, which is what the paper's TTS factorisation conditions on, and zero-shot cloning becomes plain
  continuation: text = prompt transcript + target text, audio = prompt patches, then the model continues.
  Training on whole utterances therefore already trains cloning (any prefix of an utterance is a prompt).
- The hidden state at <|audio_start|> conditions the first patch; the hidden state at patch k conditions
  patch k+1; the hidden state at the last patch is trained to fire the stop head. No <|audio_end|> token is
  generated in TTS, because stopping is the binary EOS head's job (paper Eq. 12).
- The instruction of controllable TTS sits between its own delimiters before the text, so a model trained
  without instructions sees the same text/audio layout (fine-tuning only adds a prefix), and the
  instruction can never be confused with words to be spoken.
- ASR closes the audio with <|audio_end|>, the point where the LM head starts predicting the transcript,
  and ends it with <|text_end|> so greedy decoding knows when to stop. Only the transcript and
  <|text_end|> carry the text loss.
"""
from __future__ import annotations

import unicodedata

from .text_tokenizer import (
    AUDIO_END, AUDIO_START, INSTRUCT_END, INSTRUCT_START, TASK_ASR, TASK_TTS, TEXT_END, TextTokenizer,
)


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_prompt_and_target_text(prompt_text: str, text: str) -> str:
    """Joins the prompt transcript and the target text as one utterance would be written."""
    prompt_text, text = prompt_text.strip(), text.strip()
    if not prompt_text:
        return text
    if not text:
        return prompt_text
    separator = "" if _is_cjk(prompt_text[-1]) or _is_cjk(text[0]) else " "
    return prompt_text + separator + text


def tts_prefix_ids(tokenizer: TextTokenizer, text: str, instruction: str | None = None) -> list[int]:
    """Token ids before the first audio patch of a TTS sequence; ends with <|audio_start|>."""
    ids = [tokenizer.id(TASK_TTS)]
    if instruction:
        ids += [tokenizer.id(INSTRUCT_START), *tokenizer.encode(instruction.strip()), tokenizer.id(INSTRUCT_END)]
    ids += tokenizer.encode(text.strip())
    ids.append(tokenizer.id(AUDIO_START))
    return ids


def asr_prefix_ids(tokenizer: TextTokenizer) -> list[int]:
    """Token ids before the audio of an ASR sequence."""
    return [tokenizer.id(TASK_ASR), tokenizer.id(AUDIO_START)]


def asr_suffix_ids(tokenizer: TextTokenizer) -> list[int]:
    """Token ids right after the audio of an ASR sequence; the transcript follows."""
    return [tokenizer.id(AUDIO_END)]


def asr_target_ids(tokenizer: TextTokenizer, transcript: str) -> list[int]:
    """Transcript ids plus the end marker: the positions that carry the text loss."""
    return [*tokenizer.encode(transcript.strip()), tokenizer.id(TEXT_END)]
