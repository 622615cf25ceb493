"""The Seed-TTS-Eval speaker-similarity model: WavLM hidden states -> ECAPA-TDNN -> 256-d embedding.

It reproduces the architecture of UniSpeech's `ECAPA_TDNN_SMALL(feat_dim=1024, feat_type='wavlm_large')` (the SIM
judge of the official scripts) in our own code, and loads its released weights `wavlm_large_finetune.pth` strictly:

* front end: `transformers.WavLMModel`; every hidden state (the input of each transformer layer, then the final
  output: layers + 1 tensors) is mixed with learned softmax weights (`layer_weights`), transposed to
  [batch, dim, frames] and normalised per channel over time (instance norm without affine parameters);
* ECAPA-TDNN: a conv-ReLU-BN stem (kernel 5), three SE-Res2Net blocks (kernel 3, dilation 2/3/4, scale 8,
  squeeze-excitation bottleneck 128), a 1x1 conv over the three block outputs concatenated, attentive statistics
  pooling (weighted mean and std), batch norm and a linear layer to the embedding.

Loading (`load_unispeech_checkpoint`): `torch.load(weights_only=True)`, then every key of the UniSpeech state dict is
renamed by `unispeech_key_to_ours` (the ECAPA names and, under `feature_extract.model.`, the fairseq WavLM names that
s3prl uses) and the result must match our model exactly: any missing, unexpected or mis-shaped key is an error that
names it. (The official script loads non-strictly, which silently leaves a mis-named weight random.) The layer sizes
are read from the checkpoint itself, so the same code loads the real model and the tiny ones of the tests.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class ConvReluNorm(nn.Module):
    """Conv1d -> ReLU -> BatchNorm1d (UniSpeech's Conv1dReluBn)."""

    def __init__(self, in_dim: int, out_dim: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_dim, out_dim, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
        self.norm = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.relu(self.conv(x)))


class Res2Conv(nn.Module):
    """Res2Net convolution: `scale` channel groups; group i>0 (but the last) is convolved after adding the previous
    group's output (hierarchical residual), the last group passes through unchanged."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int):
        super().__init__()
        if channels % scale:
            raise ValueError(f"channels ({channels}) must be divisible by the Res2Net scale ({scale})")
        self.width = channels // scale
        count = max(scale - 1, 1)
        pad = dilation * (kernel - 1) // 2
        self.convs = nn.ModuleList(nn.Conv1d(self.width, self.width, kernel, padding=pad, dilation=dilation)
                                   for _ in range(count))
        self.norms = nn.ModuleList(nn.BatchNorm1d(self.width) for _ in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(x, self.width, dim=1)
        outputs, carry = [], None
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            carry = groups[i] if carry is None else carry + groups[i]
            carry = norm(F.relu(conv(carry)))
            outputs.append(carry)
        outputs.extend(groups[len(self.convs):])  # the untouched last group (none when scale == 1)
        return torch.cat(outputs, dim=1)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.squeeze = nn.Linear(channels, bottleneck)
        self.excite = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=2)))))
        return x * gate[:, :, None]


class SERes2Block(nn.Module):
    def __init__(self, in_dim: int, channels: int, kernel: int, dilation: int, scale: int, se_dim: int):
        super().__init__()
        self.reduce = ConvReluNorm(in_dim, channels)
        self.res2 = Res2Conv(channels, kernel, dilation, scale)
        self.expand = ConvReluNorm(channels, channels)
        self.se = SqueezeExcite(channels, se_dim)
        self.shortcut = nn.Conv1d(in_dim, channels, 1) if in_dim != channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.se(self.expand(self.res2(self.reduce(x)))) + skip


class AttentiveStatsPool(nn.Module):
    """Per-channel softmax attention over frames; returns [weighted mean, weighted std] concatenated."""

    def __init__(self, channels: int, attention_dim: int):
        super().__init__()
        self.attend = nn.Conv1d(channels, attention_dim, 1)
        self.score = nn.Conv1d(attention_dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(torch.tanh(self.attend(x))), dim=2)
        mean = (weights * x).sum(dim=2)
        var = (weights * x * x).sum(dim=2) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-9).sqrt()], dim=1)


class ECAPATDNN(nn.Module):
    """ECAPA-TDNN over a weighted sum of `num_features` stacked SSL hidden states of width `feat_dim`."""

    DILATIONS = (2, 3, 4)

    def __init__(self, feat_dim: int = 1024, num_features: int = 25, channels: int = 512, cat_channels: int = 1536,
                 attention_dim: int = 128, se_dim: int = 128, scale: int = 8, emb_dim: int = 256):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(num_features))
        self.stem = ConvReluNorm(feat_dim, channels, kernel=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, channels, 3, d, scale, se_dim) for d in self.DILATIONS)
        self.aggregate = nn.Conv1d(channels * len(self.DILATIONS), cat_channels, 1)
        self.pool = AttentiveStatsPool(cat_channels, attention_dim)
        self.pool_norm = nn.BatchNorm1d(cat_channels * 2)
        self.embed = nn.Linear(cat_channels * 2, emb_dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [num_features, batch, frames, feat_dim] -> embeddings [batch, emb_dim]."""
        if hidden_states.shape[0] != self.layer_weights.numel():
            raise ValueError(f"got {hidden_states.shape[0]} hidden states, the checkpoint weights "
                             f"{self.layer_weights.numel()}")
        mix = torch.softmax(self.layer_weights, dim=0)
        x = (mix[:, None, None, None] * hidden_states).sum(dim=0).transpose(1, 2) + 1e-6
        x = F.instance_norm(x)  # per channel over time, no affine parameters, no running statistics
        x = self.stem(x)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = F.relu(self.aggregate(torch.cat(outs, dim=1)))
        return self.embed(self.pool_norm(self.pool(x)))


class WavLMECAPA(nn.Module):
    """WavLM front end + ECAPA-TDNN; `forward(wav [1, samples] at 16 kHz)` -> [1, emb_dim]."""

    def __init__(self, wavlm: nn.Module, ecapa: ECAPATDNN, normalize_waveform: bool = True):
        super().__init__()
        self.wavlm, self.ecapa = wavlm, ecapa
        self.normalize_waveform = normalize_waveform  # WavLM-large was trained on zero-mean unit-variance input

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.normalize_waveform:
            wav = F.layer_norm(wav, wav.shape[-1:])
        out = self.wavlm(wav, output_hidden_states=True)
        return self.ecapa(torch.stack(out.hidden_states, dim=0))


# ---- the UniSpeech checkpoint layout -------------------------------------------------------------------------------
UNISPEECH_WAVLM_PREFIX = "feature_extract.model."

# (UniSpeech name, our name) templates. Placeholders: {n} a number, {p} a parameter or buffer name (weight, bias,
# running_mean, ...), {q} one of q/k/v/out; the ECAPA block index is {L} = 2..4 in theirs (layer2..layer4) and
# {B} = L - 2 in ours (blocks.0..2). Our ECAPA names get the prefix `ecapa.`.
ECAPA_KEY_MAP = [
    ("feature_weight", "layer_weights"),
    ("layer1.conv.{p}", "stem.conv.{p}"),
    ("layer1.bn.{p}", "stem.norm.{p}"),
    ("layer{L}.Conv1dReluBn1.conv.{p}", "blocks.{B}.reduce.conv.{p}"),
    ("layer{L}.Conv1dReluBn1.bn.{p}", "blocks.{B}.reduce.norm.{p}"),
    ("layer{L}.Res2Conv1dReluBn.convs.{n}.{p}", "blocks.{B}.res2.convs.{n}.{p}"),
    ("layer{L}.Res2Conv1dReluBn.bns.{n}.{p}", "blocks.{B}.res2.norms.{n}.{p}"),
    ("layer{L}.Conv1dReluBn2.conv.{p}", "blocks.{B}.expand.conv.{p}"),
    ("layer{L}.Conv1dReluBn2.bn.{p}", "blocks.{B}.expand.norm.{p}"),
    ("layer{L}.SE_Connect.linear1.{p}", "blocks.{B}.se.squeeze.{p}"),
    ("layer{L}.SE_Connect.linear2.{p}", "blocks.{B}.se.excite.{p}"),
    ("layer{L}.shortcut.{p}", "blocks.{B}.shortcut.{p}"),
    ("conv.{p}", "aggregate.{p}"),
    ("pooling.linear1.{p}", "pool.attend.{p}"),
    ("pooling.linear2.{p}", "pool.score.{p}"),
    ("bn.{p}", "pool_norm.{p}"),
    ("linear.{p}", "embed.{p}"),
]

# fairseq/unilm WavLM names, as s3prl's `wavlm_large` upstream holds them under `feature_extract.model.`, ->
# transformers' WavLMModel names (prefix `wavlm.`). Where two of our names are listed for one of theirs (the
# positional conv's weight norm: old `weight_g/_v` or torch's parametrizations), the one our model has is used.
WAVLM_KEY_MAP = [
    ("feature_extractor.conv_layers.{n}.0.{p}", "feature_extractor.conv_layers.{n}.conv.{p}"),
    ("feature_extractor.conv_layers.{n}.2.1.{p}", "feature_extractor.conv_layers.{n}.layer_norm.{p}"),  # layer_norm mode
    ("feature_extractor.conv_layers.{n}.2.{p}", "feature_extractor.conv_layers.{n}.layer_norm.{p}"),  # group_norm mode
    ("layer_norm.{p}", "feature_projection.layer_norm.{p}"),
    ("post_extract_proj.{p}", "feature_projection.projection.{p}"),
    ("mask_emb", "masked_spec_embed"),
    ("encoder.pos_conv.0.bias", "encoder.pos_conv_embed.conv.bias"),
    ("encoder.pos_conv.0.weight_g", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    ("encoder.pos_conv.0.weight_g", "encoder.pos_conv_embed.conv.weight_g"),
    ("encoder.pos_conv.0.weight_v", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    ("encoder.pos_conv.0.weight_v", "encoder.pos_conv_embed.conv.weight_v"),
    ("encoder.layer_norm.{p}", "encoder.layer_norm.{p}"),
    ("encoder.layers.{n}.self_attn.{q}_proj.{p}", "encoder.layers.{n}.attention.{q}_proj.{p}"),
    ("encoder.layers.{n}.self_attn.grep_linear.{p}", "encoder.layers.{n}.attention.gru_rel_pos_linear.{p}"),
    ("encoder.layers.{n}.self_attn.grep_a", "encoder.layers.{n}.attention.gru_rel_pos_const"),
    ("encoder.layers.{n}.self_attn.relative_attention_bias.{p}", "encoder.layers.{n}.attention.rel_attn_embed.{p}"),
    ("encoder.layers.{n}.self_attn_layer_norm.{p}", "encoder.layers.{n}.layer_norm.{p}"),
    ("encoder.layers.{n}.fc1.{p}", "encoder.layers.{n}.feed_forward.intermediate_dense.{p}"),
    ("encoder.layers.{n}.fc2.{p}", "encoder.layers.{n}.feed_forward.output_dense.{p}"),
    ("encoder.layers.{n}.final_layer_norm.{p}", "encoder.layers.{n}.final_layer_norm.{p}"),
]

_PLACEHOLDERS = {"n": r"\d+", "p": r"[a-z_]+", "q": r"q|k|v|out", "L": r"[234]", "B": r"[012]"}


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", template)  # literal, name, literal, name, ...
    pattern = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
                      for i, part in enumerate(parts))
    return re.compile(f"^{pattern}$")


def _translate(key: str, source: str, target: str) -> str | None:
    match = _template_regex(source).match(key)
    if match is None:
        return None
    values = match.groupdict()
    if "L" in values:
        values["B"] = str(int(values["L"]) - 2)
    if "B" in values:
        values["L"] = str(int(values["B"]) + 2)
    return target.format(**values)


def _rules():
    for theirs, ours in ECAPA_KEY_MAP:
        yield theirs, "ecapa." + ours
    for theirs, ours in WAVLM_KEY_MAP:
        yield UNISPEECH_WAVLM_PREFIX + theirs, "wavlm." + ours


def unispeech_key_to_ours(key: str) -> list[str]:
    """Every name of ours (`ecapa.*` / `wavlm.*`) the key map gives a UniSpeech key; empty when no rule knows it."""
    return [name for theirs, ours in _rules() if (name := _translate(key, theirs, ours)) is not None]


def ours_to_unispeech(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse renaming: a WavLMECAPA state dict in UniSpeech's layout (the tests write checkpoints with it)."""
    out = {}
    for key, value in state_dict.items():
        names = [name for theirs, ours in _rules() if (name := _translate(key, ours, theirs)) is not None]
        if not names:
            raise ValueError(f"the key map has no UniSpeech name for {key!r}")
        out[names[0]] = value
    return out


class CheckpointMismatchError(ValueError):
    """The checkpoint does not match the model exactly; the message names every offending key."""


def read_unispeech_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`torch.load(weights_only=True)` of `wavlm_large_finetune.pth`; its weights sit under 'model' (or at the top)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"speaker-verification checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - the unpickler's refusal comes in several types
        raise CheckpointMismatchError(
            f"{path} cannot be read with torch.load(weights_only=True) ({err}). It is refused rather than unpickled: "
            "if you trust the file, re-save only its 'model' tensors once (a plain dict of tensors) in a separate "
            "environment and pass that file instead"
        ) from None
    state = blob.get("model", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path}: expected a state dict of tensors (under 'model'), got {type(blob).__name__}")
    return state


def ecapa_from_unispeech(state: dict[str, torch.Tensor]) -> ECAPATDNN:
    """An ECAPATDNN shaped like the checkpoint (sizes read from its tensors; the kernel/dilation layout is fixed)."""
    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointMismatchError(f"missing key {key!r}: this is not a UniSpeech ECAPA-TDNN state dict")
        return state[key]

    stem = need("layer1.conv.weight")
    scale = 1 + len({k.split(".")[3] for k in state if k.startswith("layer2.Res2Conv1dReluBn.convs.")})
    return ECAPATDNN(feat_dim=stem.shape[1], num_features=need("feature_weight").numel(), channels=stem.shape[0],
                     cat_channels=need("conv.weight").shape[0], attention_dim=need("pooling.linear1.weight").shape[0],
                     se_dim=need("layer2.SE_Connect.linear1.weight").shape[0], scale=scale,
                     emb_dim=need("linear.weight").shape[0])


def load_unispeech_checkpoint(path: str | Path, wavlm: nn.Module | None = None, wavlm_dir: str | Path | None = None,
                              normalize_waveform: bool = True) -> WavLMECAPA:
    """WavLMECAPA with every weight of UniSpeech's checkpoint, loaded strictly.

    The WavLM architecture comes from `wavlm` (a module) or `wavlm_dir` (a local transformers folder, e.g. a
    `save_pretrained` copy of microsoft/wavlm-large); without either, WavLM-large's configuration is used. When the
    checkpoint carries the WavLM weights (`feature_extract.model.*`, as the released file does, fine-tuned with the
    ECAPA head) they replace the folder's; a checkpoint without them needs `wavlm_dir` for the front end weights."""
    from transformers import WavLMConfig, WavLMModel

    state = read_unispeech_state_dict(path)
    carries_wavlm = any(k.startswith(UNISPEECH_WAVLM_PREFIX) for k in state)
    if wavlm is None:
        if wavlm_dir is not None and carries_wavlm:  # the architecture only: the weights come from the checkpoint
            wavlm = WavLMModel(WavLMConfig.from_pretrained(str(wavlm_dir), local_files_only=True))
        elif wavlm_dir is not None:
            wavlm = WavLMModel.from_pretrained(str(wavlm_dir), local_files_only=True)
        elif carries_wavlm:
            wavlm = WavLMModel(wavlm_large_config(WavLMConfig))
        else:
            raise CheckpointMismatchError(f"{path} holds no WavLM weights ({UNISPEECH_WAVLM_PREFIX}*): give the WavLM "
                                          "folder too (wavlm-ecapa:CKPT,WAVLM_DIR)")
    ecapa = ecapa_from_unispeech(state)
    model = WavLMECAPA(wavlm, ecapa, normalize_waveform)
    expected = model.state_dict()
    if not carries_wavlm:  # front end weights already came from the folder
        expected = {k: v for k, v in expected.items() if k.startswith("ecapa.")}
    renamed, unexpected, shape_errors = {}, [], []
    for key, value in state.items():
        names = unispeech_key_to_ours(key)
        ours = next((n for n in names if n in expected), None)
        if ours is None:
            unexpected.append(f"{key} (-> {names[0]}, which the model does not have)" if names else key)
            continue
        if tuple(expected[ours].shape) != tuple(value.shape):
            shape_errors.append(f"{key} -> {ours}: checkpoint {tuple(value.shape)} vs model {tuple(expected[ours].shape)}")
            continue
        if ours in renamed:
            unexpected.append(f"{key} (-> {ours}, given twice)")
            continue
        renamed[ours] = value
    missing = sorted(set(expected) - set(renamed) - {k for k in expected if _is_shape_error_target(k, shape_errors)})
    if unexpected or missing or shape_errors:
        lines = [f"{path} does not match the WavLM + ECAPA-TDNN model exactly (loading is strict):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(_both_names(k) for k in missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(sorted(unexpected))}")
        if shape_errors:
            lines.append(f"  shape mismatches ({len(shape_errors)}): {'; '.join(shape_errors)}")
        raise CheckpointMismatchError("\n".join(lines))
    if carries_wavlm:
        model.load_state_dict(renamed, strict=True)
    else:  # the front end keeps the folder's weights
        model.ecapa.load_state_dict({k[len("ecapa."):]: v for k, v in renamed.items()}, strict=True)
    return model.eval()


def _both_names(ours: str) -> str:
    theirs = next((name for t, o in _rules() if (name := _translate(ours, o, t)) is not None), None)
    return f"{theirs} (ours: {ours})" if theirs else f"{ours} (no UniSpeech name)"


def _is_shape_error_target(key: str, shape_errors: list[str]) -> bool:
    return any(f"-> {key}:" in err for err in shape_errors)


def wavlm_large_config(config_cls):
    """WavLM-large's architecture (microsoft/wavlm-large), for checkpoints that carry the weights themselves."""
    return config_cls(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                      feat_extract_norm="layer", conv_bias=False, do_stable_layer_norm=True,
                      num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, num_buckets=320,
                      max_bucket_distance=800, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                      feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.05)
