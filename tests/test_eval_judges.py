"""The official Seed-TTS-Eval judges as named choices (eval/judges.py, eval/ecapa.py) and the protocol's scoring
rules (eval/seed_tts.py, eval/asr_wer.py): tiny random models saved in the real formats, loaded the way the real
ones are; flow and shape checks, not accuracy. Offline, CPU, a few seconds each."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from eval.asr_wer import SEED_TTS_PUNCTUATION, ZHON_PUNCTUATION, normalize_text, score_utterance
from eval.audio_metrics import MissingJudgeError
from eval.ecapa import (ECAPATDNN, CheckpointMismatchError, WavLMECAPA, load_unispeech_checkpoint,
                        ours_to_unispeech, unispeech_key_to_ours)
from eval.judges import HFWhisperJudge, make_asr_judge, make_speaker_judge
from eval.seed_tts import EvalItem, format_summary, read_meta, run

RATE = 16000


def noise(seconds: float, seed: int, rate: int = RATE) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


# ---- whisper-hf ----------------------------------------------------------------------------------------------------
WHISPER_SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>", "<|translate|>", "<|transcribe|>",
                    "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]


def byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (GPT-2/Whisper vocabularies), so any text can be encoded."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    folder = tmp_path_factory.mktemp("whisper-tiny-random")
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    for token in WHISPER_SPECIALS:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), unk_token="<|endoftext|>",
                                 bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": WHISPER_SPECIALS[1:]})
    tid = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=16, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=1500, max_target_positions=64, pad_token_id=tid("<|endoftext|>"),
                           bos_token_id=tid("<|endoftext|>"), eos_token_id=tid("<|endoftext|>"),
                           decoder_start_token_id=tid("<|startoftranscript|>"), suppress_tokens=None,
                           begin_suppress_tokens=None)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config  # what openai/whisper-large-v3's generation_config.json carries
    generation.lang_to_id = {"<|en|>": tid("<|en|>"), "<|zh|>": tid("<|zh|>")}
    generation.task_to_id = {"transcribe": tid("<|transcribe|>"), "translate": tid("<|translate|>")}
    generation.is_multilingual = True
    generation.no_timestamps_token_id = tid("<|notimestamps|>")
    generation.max_length = 10
    generation._from_model_config = False
    model.save_pretrained(folder)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_whisper_hf_judge_transcribes_batched_with_the_language_forced(whisper_dir):
    judge = make_asr_judge(f"whisper-hf:{whisper_dir}", language="en")
    assert isinstance(judge, HFWhisperJudge) and judge.device in ("cpu", "cuda")
    tid = judge.processor.tokenizer.convert_tokens_to_ids
    prompts = []
    forward = judge.model.forward

    def spy(*args, **kwargs):  # the first decoder step sees the whole forced prompt
        ids = kwargs.get("decoder_input_ids")
        if ids is not None and ids.shape[1] >= 4:
            prompts.append(ids[:, :4].tolist())
        return forward(*args, **kwargs)

    judge.model.forward = spy
    clips, rates = [noise(1.0, 0, 24000), noise(0.5, 1), noise(2.0, 2, 48000)], [24000, RATE, 48000]
    batched = judge.transcribe_batch(clips, rates)
    assert len(batched) == 3 and all(isinstance(text, str) for text in batched)
    # every clip is padded to the same 30 s window: a batch decodes exactly as the clips one by one
    assert batched == [judge.transcribe(clip, rate) for clip, rate in zip(clips, rates)]
    sot, en, zh, transcribe, notimestamps = tid(["<|startoftranscript|>", "<|en|>", "<|zh|>", "<|transcribe|>",
                                                  "<|notimestamps|>"])
    assert prompts[0] == [[sot, en, transcribe, notimestamps]] * 3
    judge.transcribe_batch([clips[0]], [rates[0]], language="zh")
    assert prompts[-1] == [[sot, zh, transcribe, notimestamps]]
    provenance = judge.provenance()
    assert provenance["sha256"]["model.safetensors"] == hashlib.sha256(
        (whisper_dir / "model.safetensors").read_bytes()).hexdigest()


def test_whisper_hf_judge_needs_a_transformers_folder(tmp_path):
    with pytest.raises(MissingJudgeError, match="config.json missing"):
        make_asr_judge(f"whisper-hf:{tmp_path}")


# ---- paraformer ----------------------------------------------------------------------------------------------------
def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.skipif(_installed("funasr"), reason="FunASR is installed here")
def test_paraformer_without_funasr_says_what_to_install(tmp_path):
    with pytest.raises(MissingJudgeError, match="pip install funasr"):
        make_asr_judge(f"paraformer:{tmp_path}")


def test_paraformer_flow_with_stand_in_packages(tmp_path, monkeypatch):
    """FunASR and zhconv replaced by stand-ins: the judge resamples to 16 kHz, takes `text`, converts to simplified
    characters, refuses non-Chinese items, and without zhconv says what to install."""
    calls = []

    class AutoModel:
        def __init__(self, model, **kwargs):
            calls.append(("init", model, kwargs))

        def generate(self, input, batch_size_s):
            calls.append(("generate", len(input), batch_size_s))
            return [{"key": "x", "text": "漢語 識別"}]

    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=AutoModel, __version__="stand-in"))
    if not _installed("zhconv"):
        monkeypatch.setitem(sys.modules, "zhconv", None)  # import fails, as on a machine without it
        with pytest.raises(MissingJudgeError, match="pip install zhconv"):
            make_asr_judge(f"paraformer:{tmp_path}")
    table = str.maketrans({"漢": "汉", "語": "语", "識": "识", "別": "别"})
    monkeypatch.setitem(sys.modules, "zhconv", types.SimpleNamespace(convert=lambda text, locale: text.translate(table)))
    judge = make_asr_judge(f"paraformer:{tmp_path}")
    assert calls[0][1] == str(tmp_path) and calls[0][2]["disable_update"] is True
    assert judge.transcribe_batch([noise(1.0, 0, 48000)], [48000], language="zh") == ["汉语 识别"]
    assert calls[-1] == ("generate", RATE, 300)  # one second at 16 kHz, batch_size_s as run_wer.py
    with pytest.raises(ValueError, match="Chinese only"):
        judge.transcribe_batch([noise(1.0, 0)], [RATE], language="en")
    assert score_utterance("汉语识别。", judge.transcribe(noise(1.0, 0), RATE), "zh").wer == 0.0


# ---- wavlm-ecapa ---------------------------------------------------------------------------------------------------
def tiny_wavlm_config():
    from transformers import WavLMConfig

    return WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                       conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                       num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True,
                       conv_bias=False, num_buckets=32, max_bucket_distance=64)


def tiny_ecapa() -> ECAPATDNN:
    return ECAPATDNN(feat_dim=32, num_features=3, channels=16, cat_channels=24, attention_dim=8, se_dim=8, scale=8,
                     emb_dim=12)


# UniSpeech ECAPA_TDNN names, written out independently of eval/ecapa.py's key map
def unispeech_ecapa_names(scale: int = 8) -> set[str]:
    conv, bn = ("weight", "bias"), ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = {"feature_weight"} | {f"layer1.conv.{p}" for p in conv} | {f"layer1.bn.{p}" for p in bn}
    for layer in (2, 3, 4):
        for sub in ("Conv1dReluBn1", "Conv1dReluBn2"):
            names |= {f"layer{layer}.{sub}.conv.{p}" for p in conv} | {f"layer{layer}.{sub}.bn.{p}" for p in bn}
        for j in range(scale - 1):
            names |= {f"layer{layer}.Res2Conv1dReluBn.convs.{j}.{p}" for p in conv}
            names |= {f"layer{layer}.Res2Conv1dReluBn.bns.{j}.{p}" for p in bn}
        names |= {f"layer{layer}.SE_Connect.linear{k}.{p}" for k in (1, 2) for p in conv}
    names |= {f"conv.{p}" for p in conv} | {f"pooling.linear{k}.{p}" for k in (1, 2) for p in conv}
    return names | {f"bn.{p}" for p in bn} | {f"linear.{p}" for p in conv}


@pytest.fixture(scope="module")
def sv_files(tmp_path_factory):
    """A tiny WavLM saved with save_pretrained, and a full checkpoint in the layout of wavlm_large_finetune.pth."""
    from transformers import WavLMModel

    root = tmp_path_factory.mktemp("wavlm-ecapa")
    torch.manual_seed(0)
    WavLMModel(tiny_wavlm_config()).save_pretrained(root / "wavlm")
    torch.manual_seed(1)
    model = WavLMECAPA(WavLMModel(tiny_wavlm_config()), tiny_ecapa()).eval()  # other WavLM weights than the folder's
    for module in model.ecapa.modules():  # non-trivial running statistics, so a mis-mapped buffer would show
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = ours_to_unispeech(model.state_dict())
    torch.save({"model": state}, root / "wavlm_large_finetune.pth")
    return root, model, state


def test_unispeech_layout_is_the_one_written(sv_files):
    _, _, state = sv_files
    ecapa = {k for k in state if not k.startswith("feature_extract.")}
    assert ecapa == unispeech_ecapa_names()
    for key in ("feature_extract.model.encoder.layers.0.self_attn.grep_a",
                "feature_extract.model.encoder.layers.0.self_attn.relative_attention_bias.weight",
                "feature_extract.model.encoder.layers.1.self_attn_layer_norm.weight",
                "feature_extract.model.encoder.layers.1.fc1.weight", "feature_extract.model.encoder.pos_conv.0.weight_g",
                "feature_extract.model.feature_extractor.conv_layers.1.2.1.bias",
                "feature_extract.model.post_extract_proj.weight", "feature_extract.model.mask_emb"):
        assert key in state, key
    assert unispeech_key_to_ours("layer3.SE_Connect.linear2.bias") == ["ecapa.blocks.1.se.excite.bias"]
    assert unispeech_key_to_ours("something.else") == []


def test_wavlm_ecapa_judge_loads_strictly_and_scores_cosine(sv_files):
    root, reference, _ = sv_files
    ckpt = root / "wavlm_large_finetune.pth"
    judge = make_speaker_judge(f"wavlm-ecapa:{ckpt},{root / 'wavlm'}")
    # the checkpoint's WavLM weights replace the folder's (the released file carries WavLM fine-tuned with the head)
    loaded = judge.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
    a, b = noise(1.0, 3), noise(1.5, 4, 24000)
    emb_a = judge.embed(a, RATE)
    assert emb_a.shape == (12,) and np.isfinite(emb_a).all()
    with torch.no_grad():
        direct = reference(torch.from_numpy(a)[None])[0].numpy()
    np.testing.assert_allclose(emb_a, direct, rtol=1e-4, atol=1e-5)
    from eval.audio_metrics import cosine_similarity

    same = cosine_similarity(emb_a, judge.embed(a.copy(), RATE))
    other = cosine_similarity(emb_a, judge.embed(b, 24000))
    assert same == pytest.approx(1.0, abs=1e-5) and -1.0 <= other <= 1.0
    assert judge.provenance()["sha256"][ckpt.name] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_without_a_folder_the_architecture_is_wavlm_large(sv_files, monkeypatch):
    import eval.ecapa

    root, reference, _ = sv_files
    from_large = eval.ecapa.wavlm_large_config(dict)
    assert (from_large["hidden_size"], from_large["num_hidden_layers"], from_large["do_stable_layer_norm"]) == (1024, 24, True)
    monkeypatch.setattr(eval.ecapa, "wavlm_large_config", lambda cls: tiny_wavlm_config())  # a tiny stand-in
    judge = make_speaker_judge(f"wavlm-ecapa:{root / 'wavlm_large_finetune.pth'}")
    assert all(torch.equal(judge.model.state_dict()[k], v) for k, v in reference.state_dict().items())


def test_ecapa_only_checkpoint_takes_wavlm_weights_from_the_folder(sv_files, tmp_path):
    from transformers import WavLMModel

    root, reference, state = sv_files
    ecapa_only = {k: v for k, v in state.items() if not k.startswith("feature_extract.")}
    torch.save({"model": ecapa_only}, tmp_path / "ecapa.pth")
    model = load_unispeech_checkpoint(tmp_path / "ecapa.pth", wavlm_dir=root / "wavlm")
    folder = WavLMModel.from_pretrained(str(root / "wavlm")).state_dict()
    assert all(torch.equal(model.wavlm.state_dict()[k], v) for k, v in folder.items())
    assert all(torch.equal(model.ecapa.state_dict()[k], v) for k, v in reference.ecapa.state_dict().items())
    with pytest.raises(CheckpointMismatchError, match="holds no WavLM weights"):
        load_unispeech_checkpoint(tmp_path / "ecapa.pth")


@pytest.mark.parametrize("change, message", [
    ("rename", r"(?s)(?=.*unexpected keys \(1\): layer3\.SE_Connect\.lin1\.weight)(?=.*missing keys \(1\): "
               r"layer3\.SE_Connect\.linear1\.weight \(ours: ecapa\.blocks\.1\.se\.squeeze\.weight\))"),
    ("missing", r"missing keys \(1\): feature_extract\.model\.encoder\.layers\.0\.self_attn\.grep_a "
                r"\(ours: wavlm\.encoder\.layers\.0\.attention\.gru_rel_pos_const\)"),
    ("extra", r"unexpected keys \(2\): loss\.weight, projection\.weight"),
    ("shape", r"shape mismatches \(1\): layer2\.SE_Connect\.linear1\.bias -> ecapa\.blocks\.0\.se\.squeeze\.bias"),
])
def test_a_mismatched_checkpoint_is_refused_naming_the_key(sv_files, tmp_path, change, message):
    from transformers import WavLMModel

    _, _, state = sv_files
    state = dict(state)
    if change == "rename":
        state["layer3.SE_Connect.lin1.weight"] = state.pop("layer3.SE_Connect.linear1.weight")
    elif change == "missing":
        del state["feature_extract.model.encoder.layers.0.self_attn.grep_a"]
    elif change == "extra":
        state["projection.weight"] = torch.zeros(3)
        state["loss.weight"] = torch.zeros(3)
    else:
        state["layer2.SE_Connect.linear1.bias"] = torch.zeros(5)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match=message):
        load_unispeech_checkpoint(tmp_path / "bad.pth", wavlm=WavLMModel(tiny_wavlm_config()))


def test_a_checkpoint_that_needs_unpickling_is_refused(sv_files, tmp_path):
    _, _, state = sv_files
    torch.save({"model": state, "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointMismatchError, match="weights_only=True"):
        load_unispeech_checkpoint(tmp_path / "pickled.pth")


# ---- normaliser ----------------------------------------------------------------------------------------------------
def test_official_normaliser_edge_cases():
    official = lambda text, lang="en": normalize_text(text, lang, style="seed-tts")  # noqa: E731
    # the ASCII apostrophe stays everywhere (quotes too); the curly one is in zhon's list and is deleted
    assert official("Don't say 'no'.") == "don't say 'no'"
    assert official("Don’t") == "dont"
    # punctuation is deleted, not replaced by a space: a hyphenated word becomes one token
    assert official("Well-known, state-of-the-art!") == "wellknown stateoftheart"
    # numbers are not normalised; symbols of string.punctuation go ($, %), the decimal point too
    assert official("It costs $5.50 (20% off).") == "it costs 550 20 off"
    # zh: per character, Chinese punctuation and spaces gone, Latin letters kept as characters, case kept
    assert official("你好，世界！“测试”《书》OK。", "zh") == "你 好 世 界 测 试 书 O K"
    assert official("３．５", "zh") == "３ ． ５"  # no NFKC; U+FF0E is not in zhon's list
    assert len(ZHON_PUNCTUATION) == 81 and "'" in SEED_TTS_PUNCTUATION
    # the default (NFKC) normaliser differs exactly where documented
    assert normalize_text("Well-known") == "well known" and normalize_text("'no'") == "no"
    assert score_utterance("well-known fact", "well known fact", style="seed-tts").wer == pytest.approx(2 / 2)
    assert score_utterance("well-known fact", "well known fact").wer == 0.0


# ---- protocol aggregates -------------------------------------------------------------------------------------------
class LengthKeyedASR:
    """Returns a fixed transcript per clip duration (the tests give every clip its own length)."""

    name = "length-keyed stand-in"

    def __init__(self, by_samples: dict[int, str]):
        self.by_samples, self.languages = by_samples, []

    def transcribe_batch(self, audios, rates, language=None):
        self.languages.append((language, len(audios)))
        return [self.by_samples[round(len(a) * RATE / r)] for a, r in zip(audios, rates)]


class ConstantSpeaker:
    name = "constant stand-in"

    def embed(self, audio, sample_rate):
        return np.ones(4)


def test_macro_micro_and_a_missing_wav_counted_as_failure(tmp_path):
    sf.write(tmp_path / "prompt.wav", noise(1.0, 0), RATE)
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    sf.write(wavs / "u1.wav", noise(1.0, 1), RATE)
    sf.write(wavs / "u2.wav", noise(2.0, 2, 48000), 48000)
    items = [EvalItem("u1", "p", str(tmp_path / "prompt.wav"), "A b."),                 # 1 error / 2 words
             EvalItem("u2", "p", str(tmp_path / "prompt.wav"), "c d e f g h i j"),     # 0 errors / 8 words
             EvalItem("u3", "p", str(tmp_path / "prompt.wav"), "k, l")]                # no wav: 2 deletions / 2
    asr = LengthKeyedASR({RATE: "a x", 2 * RATE: "c d e f g h i j"})
    summary = run(items, tmp_path / "out", asr, ConstantSpeaker(), generated=wavs, progress=False)
    result = summary["per_seed"]["given"]
    assert result["missing"] == ["u3"] and result["failures"] == [{"utt": "u3", "reason": "no generated wav"}]
    assert result["wer"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)         # macro, the missing one as WER 1
    assert result["wer_micro"] == pytest.approx((1 + 0 + 2) / (2 + 8 + 2))  # micro differs
    assert result["wer_scored"] == pytest.approx(0.25)                     # the official scripts' number (skips u3)
    assert result["sim"] == pytest.approx(2 / 3) and result["sim_scored"] == pytest.approx(1.0)
    assert summary["wer"] == {"mean": pytest.approx(0.5), "std": 0.0, "n": 1}
    assert asr.languages == [("en", 2)]  # one batch, the items' language
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["environment"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert "transformers" in saved["environment"] and "jiwer" in saved["environment"]
    assert saved["judges"]["asr"] == {"name": "length-keyed stand-in"}
    text = format_summary(summary)
    assert "1 generated files missing" in text and "over the existing files only" in text


def test_official_meta_layouts_set_the_language(tmp_path):
    for lang, line in (("en", "e1|prompt text|prompt-wavs/p.wav|Target text.|gt/e1.wav"),
                       ("zh", "z1|提示文本|prompt-wavs/p.wav|目标文本。")):
        folder = tmp_path / "seedtts_testset" / lang
        (folder / "prompt-wavs").mkdir(parents=True)
        (folder / "gt").mkdir()
        sf.write(folder / "prompt-wavs" / "p.wav", noise(0.5, 0), RATE)
        sf.write(folder / "gt" / "e1.wav", noise(0.5, 1), RATE)
        (folder / "meta.lst").write_text(line + "\n", encoding="utf-8")
        if lang == "zh":
            (folder / "hardcase.lst").write_text(line.replace("z1", "h1") + "\n", encoding="utf-8")
    en, _ = read_meta(tmp_path / "seedtts_testset" / "en" / "meta.lst")
    zh, _ = read_meta(tmp_path / "seedtts_testset" / "zh" / "meta.lst")
    hard, _ = read_meta(tmp_path / "seedtts_testset" / "zh" / "hardcase.lst")
    forced, _ = read_meta(tmp_path / "seedtts_testset" / "zh" / "meta.lst", language="en")
    assert [(i.utt, i.language) for i in en + zh + hard + forced] == [("e1", "en"), ("z1", "zh"), ("h1", "zh"),
                                                                      ("z1", "en")]
    assert en[0].target_text == "Target text." and zh[0].prompt_text == "提示文本"


def test_cli_scores_generated_wavs_with_the_official_judges(whisper_dir, sv_files, tmp_path):
    from eval.seed_tts import main

    root, _, _ = sv_files
    folder = tmp_path / "zh"
    (folder / "wavs").mkdir(parents=True)
    sf.write(folder / "p.wav", noise(1.0, 0), RATE)
    sf.write(folder / "wavs" / "z1.wav", noise(1.0, 1, 24000), 24000)
    (folder / "meta.lst").write_text("z1|提示|p.wav|你好，世界。\nz2|提示|p.wav|再见。\n", encoding="utf-8")
    ckpt = root / "wavlm_large_finetune.pth"
    assert main(["--meta", str(folder / "meta.lst"), "--generated", str(folder / "wavs"), "--out", str(tmp_path / "out"),
                 "--asr_judge", f"whisper-hf:{whisper_dir}", "--sim_judge", f"wavlm-ecapa:{ckpt},{root / 'wavlm'}",
                 "--normaliser", "seed-tts"]) == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    result = saved["per_seed"]["given"]
    assert saved["normaliser"] == "seed-tts" and result["missing"] == ["z2"]
    row = result["utterances"][0]
    assert row["language"] == "zh" and 0.0 <= row["wer"] and -1.0 <= row["sim"] <= 1.0
    assert result["wer"] == pytest.approx((row["wer"] + 1.0) / 2)  # z2 has no wav: a failure
    assert saved["judges"]["sim"]["sha256"][ckpt.name] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert "model.safetensors" in saved["judges"]["asr"]["sha256"]
    assert {"torch", "transformers", "jiwer"} <= set(saved["environment"])


def test_seed_tts_end_to_end_on_the_shipped_demo_model_with_tiny_official_judges(whisper_dir, sv_files, tmp_path):
    """Generation by the model this repository ships (weights/demo), scored by the official judges' code paths
    (tiny random whisper-hf and WavLM-ECAPA saved in the real formats): every utterance generated and scored."""
    from eval.seed_tts import main

    release = Path(__file__).resolve().parents[1] / "weights" / "demo"
    examples = json.loads((release / "examples.json").read_text())[:2]
    folder = tmp_path / "en"
    folder.mkdir()
    lines = [f"e{i}|{ex['prompt_text']}|{release / ex['prompt_wav']}|{ex['target_text']}" for i, ex in enumerate(examples)]
    (folder / "meta.lst").write_text("\n".join(lines) + "\n", encoding="utf-8")
    root, _, _ = sv_files
    assert main(["--meta", str(folder / "meta.lst"), "--out", str(tmp_path / "out"), "--model", str(release / "unified"),
                 "--tokenizer", str(release / "tokenizer"), "--asr_judge", f"whisper-hf:{whisper_dir}",
                 "--sim_judge", f"wavlm-ecapa:{root / 'wavlm_large_finetune.pth'},{root / 'wavlm'}",
                 "--normaliser", "seed-tts", "--steps", "4"]) == 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    result = saved["per_seed"]["0"]
    assert result["missing"] == [] and not result["generation_failures"]
    assert [row["utt"] for row in result["utterances"]] == ["e0", "e1"]
    assert all(row["wer"] >= 0 and -1.0 <= row["sim"] <= 1.0 for row in result["utterances"])


def test_emosim_flow_with_a_stand_in_funasr(tmp_path, monkeypatch):
    """emotion2vec through a FunASR stand-in: utterance embeddings at 16 kHz, EMOSIM = their cosine."""
    from eval.reconstruction import make_emotion_judge, score_judges

    calls = []

    class AutoModel:
        def __init__(self, model, **kwargs):
            calls.append(("init", model, kwargs))

        def generate(self, wav, granularity, extract_embedding):
            calls.append(("generate", len(wav), granularity, extract_embedding))
            return [{"feats": np.array([np.abs(wav).mean(), np.abs(wav).max(), 1.0])}]

    monkeypatch.setitem(sys.modules, "funasr", types.SimpleNamespace(AutoModel=AutoModel))
    judge = make_emotion_judge(f"emotion2vec:{tmp_path}")
    a, b = noise(1.0, 0, 48000), 0.5 * noise(1.0, 1, 48000)
    scores, problems = score_judges(a, b, 48000, {"emosim": judge})
    assert problems == {} and calls[-1] == ("generate", RATE, "utterance", True)
    ea, eb = judge.embed(a, 48000), judge.embed(b, 48000)
    assert scores["emosim"] == pytest.approx(float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)))
    assert score_judges(a, a, 48000, {"emosim": judge})[0]["emosim"] == pytest.approx(1.0)
