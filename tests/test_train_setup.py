"""Training configuration, optimizer/schedule, DiT initialisation from a TTS-only checkpoint, semantic-encoder
freezing, and a Unite run on precomputed semantic features with both Table 8 options."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from holitok_slm.config import UnifiedConfig
from holitok_slm.model.unified import UnifiedModel
from holitok_slm.train.config import load_training_run
from holitok_slm.train.model_setup import apply_semantic_freeze, check_semantic_source, init_submodules_from
from holitok_slm.train.optim import build_optimizer, build_scheduler, cosine_with_warmup
from data_prep.toy_store import write_toy_store

ROOT = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((ROOT / "configs" / "unified" / "model_tiny.yaml").read_text())["model"]


def tiny_model(**changes) -> UnifiedModel:
    doc = json.loads(json.dumps(TINY))
    doc["backbone"]["vocab_size"] = 64
    for key, value in changes.items():
        doc[key] = value
    return UnifiedModel(UnifiedConfig.from_dict(doc), text_tokenizer=None)


def test_training_yaml_loads_with_model_include_overrides_and_rejects_typos(tmp_path):
    run = load_training_run(ROOT / "configs" / "unified" / "train_tiny.yaml",
                            ["train.max_steps=7", "data.datasets.0.weight=2.5", "data.task_ratio={tts: 3, asr: 1}"])
    assert run.model.latent_dim == 16 and run.model.dit.num_layers == 2  # from model_tiny.yaml
    assert run.train.max_steps == 7 and run.data.datasets[0].weight == 2.5 and run.data.task_ratio["tts"] == 3
    assert run.train.grad_clip == 2.0 and run.train.betas == (0.9, 0.95)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {latent_dim: 16}\ntrain: {max_step: 3}\n")
    with pytest.raises(ValueError, match="unknown keys.*max_step"):
        load_training_run(bad)
    # YAML 1.1 reads 3e-4 (no dot) as a string: numeric fields parse it, and refuse what is not a number.
    bad.write_text("train: {learning_rate: 3e-4, max_steps: '12'}\n")
    run = load_training_run(bad, ["train.weight_decay=1e-2"])
    assert (run.train.learning_rate, run.train.max_steps, run.train.weight_decay) == (3e-4, 12, 1e-2)
    with pytest.raises(ValueError, match="train.learning_rate must be a number, got 'fast'"):
        load_training_run(bad, ["train.learning_rate=fast"])
    with pytest.raises(ValueError, match="train.max_steps must be an integer, got '1.5'"):
        load_training_run(bad, ["train.max_steps='1.5'"])
    with pytest.raises(ValueError, match="train.export_dtype must be one of"):
        load_training_run(bad, ["train.export_dtype=half"])
    assert load_training_run(bad, ["train.export_dtype=bfloat16"]).train.export_dtype == "bfloat16"
    bad.write_text("data: {max_frames_per_batch: 100, max_frames_per_item: 750}\n")
    with pytest.raises(ValueError, match="must be >="):
        load_training_run(bad)
    for name in ("train_tiny.yaml", "train_base.yaml", "train_unite.yaml"):
        run = load_training_run(ROOT / "configs" / "unified" / name)
        assert run.data.task_ratio == {"tts": 5, "asr": 1} and run.train.grad_clip == 2.0
    paper = load_training_run(ROOT / "configs" / "unified" / "train_unite.yaml")
    assert paper.model.audio_input == "semantic" and paper.train.mixed_precision == "bf16"
    assert paper.train.warmup_steps == 5000 and paper.train.deepspeed_config.endswith("zero2.json")
    assert load_training_run(ROOT / "configs" / "unified" / "train_tts_only.yaml").data.task_ratio["asr"] == 0


def test_unite_config_is_an_overlay_on_base_and_inherit_is_checked(tmp_path):
    base = load_training_run(ROOT / "configs" / "unified" / "train_base.yaml").to_dict()
    unite = load_training_run(ROOT / "configs" / "unified" / "train_unite.yaml").to_dict()
    assert unite["data"] == base["data"]
    differing = sorted(k for k in base["train"] if base["train"][k] != unite["train"][k])
    assert differing == ["freeze_semantic_encoder", "output_dir"]
    assert unite["model"]["audio_input"] == "semantic" and base["model"]["audio_input"] == "patch"
    (tmp_path / "a.yaml").write_text("inherit: b.yaml\ntrain: {max_steps: 3}\n")
    (tmp_path / "b.yaml").write_text("inherit: a.yaml\n")
    with pytest.raises(ValueError, match="circle"):
        load_training_run(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text(f"inherit: {ROOT / 'configs' / 'unified' / 'train_tiny.yaml'}\n"
                                     "train: {max_steps: 9, seed: 5}\n")
    run = load_training_run(tmp_path / "a.yaml", ["train.seed=6"])
    assert (run.train.max_steps, run.train.seed, run.model.latent_dim) == (3, 6, 16)  # nearest file wins, --set last


def test_model_build_records_derived_values(tmp_path):
    from holitok_slm.tiny import build_tiny_model, tiny_config

    cfg = tiny_config()
    cfg.backbone.vocab_size = None  # "size it from the text tokenizer"
    model = build_tiny_model(["a small corpus of words", "and some more words here"] * 20, tmp_path, cfg)
    derived = model.config.derived["backbone.vocab_size"]
    assert derived["from"] is None and derived["to"] == model.backbone.lm.config.vocab_size
    assert derived["by"] == "holitok_slm/model/backbone.py"
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert saved["derived"] == model.config.derived
    assert UnifiedModel.from_pretrained(tmp_path / "saved").config.derived == model.config.derived  # nothing new


def test_cosine_schedule_with_warmup_and_optimizer_groups():
    assert cosine_with_warmup(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert cosine_with_warmup(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cosine_with_warmup(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert cosine_with_warmup(500, 10, 100, 0.1) == pytest.approx(0.1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    run = load_training_run(ROOT / "configs" / "unified" / "train_tiny.yaml",
                            ["train.warmup_steps=4", "train.max_steps=20"])
    optimizer = build_optimizer(model, run.train)
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 3]
    assert optimizer.param_groups[0]["weight_decay"] == run.train.weight_decay
    assert optimizer.param_groups[1]["weight_decay"] == 0.0
    scheduler = build_scheduler(optimizer, run.train)
    lrs = []
    for _ in range(20):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    peak = run.train.learning_rate
    assert lrs[3] == pytest.approx(peak) and lrs[0] == pytest.approx(peak / 4)
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] > peak * run.train.min_lr_ratio
    assert math.isclose(lrs[-1], peak * cosine_with_warmup(19, 4, 20, run.train.min_lr_ratio))


def test_flow_head_lr_scale_puts_dit_and_bridge_in_their_own_groups():
    model = tiny_model()
    run = load_training_run(ROOT / "configs" / "unified" / "train_tiny.yaml",
                            ["train.warmup_steps=4", "train.max_steps=20", "train.flow_head_lr_scale=3.0"])
    optimizer = build_optimizer(model, run.train)
    head = {id(p) for name, p in model.named_parameters() if name.startswith(("dit.", "bridge."))}
    assert head and len(head) < len(list(model.parameters()))
    owners = {}
    for group in optimizer.param_groups:
        kinds = {id(p) in head for p in group["params"]}
        assert len(kinds) == 1  # a group is all head or all rest
        owners.setdefault(kinds.pop(), set()).add(group["lr"])
    assert owners == {True: {3.0 * run.train.learning_rate}, False: {run.train.learning_rate}}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len([p for p in model.parameters()
                                                                          if p.requires_grad])
    scheduler = build_scheduler(optimizer, run.train)
    optimizer.step()
    scheduler.step()
    ratios = {id(g): g["lr"] / run.train.learning_rate for g in optimizer.param_groups}
    assert sorted(set(round(r / min(ratios.values()), 6) for r in ratios.values())) == [1.0, 3.0]
    with pytest.raises(ValueError, match="flow_head_lr_scale"):
        load_training_run(ROOT / "configs" / "unified" / "train_tiny.yaml", ["train.flow_head_lr_scale=0"])


def test_init_dit_from_tts_only_checkpoint_copies_only_the_head(tmp_path):
    torch.manual_seed(1)
    tts_only = tiny_model()
    tts_only.save_pretrained(tmp_path / "tts_only")
    torch.manual_seed(2)
    unified = tiny_model()
    before = {k: v.clone() for k, v in unified.state_dict().items()}
    copied = init_submodules_from(unified, tmp_path / "tts_only", ["dit."])
    after, source = unified.state_dict(), tts_only.state_dict()
    assert copied and all(k.startswith("dit.") for k in copied)
    assert all(torch.equal(after[k], source[k]) for k in copied)
    assert all(torch.equal(after[k], before[k]) for k in after if not k.startswith("dit."))
    assert not torch.equal(after["backbone.lm.model.embed_tokens.weight"], source["backbone.lm.model.embed_tokens.weight"])
    wider = json.loads(json.dumps(TINY["dit"]))
    wider["hidden_size"] = 32
    with pytest.raises(ValueError, match="shape_mismatch=.*dit\\."):
        init_submodules_from(tiny_model(dit=wider), tmp_path / "tts_only", ["dit."])
    with pytest.raises(FileNotFoundError):
        init_submodules_from(unified, tmp_path / "nowhere", ["dit."])
    # the tied embedding / LM head is saved once; copying the backbone copies it under both names
    copied = init_submodules_from(unified, tmp_path / "tts_only", ["backbone."])
    after = unified.state_dict()
    for key in ("backbone.lm.model.embed_tokens.weight", "backbone.lm.lm_head.weight"):
        assert torch.equal(after[key], source["backbone.lm.model.embed_tokens.weight"])


def test_freeze_semantic_encoder_maps_to_the_unite_model():
    cfg = UnifiedConfig.from_dict({**TINY, "audio_input": "semantic", "backbone": {**TINY["backbone"], "vocab_size": 64}})
    apply_semantic_freeze(cfg, True)
    frozen = UnifiedModel(cfg, text_tokenizer=None)
    assert not any(p.requires_grad for p in frozen.semantic_input.encoder.parameters())
    assert all(p.requires_grad for p in frozen.semantic_input.proj.parameters())
    apply_semantic_freeze(cfg, False)
    assert all(p.requires_grad for p in UnifiedModel(cfg, text_tokenizer=None).semantic_input.encoder.parameters())
    with pytest.raises(ValueError, match="Unite"):
        apply_semantic_freeze(UnifiedConfig.from_dict(TINY), True)
    # Stored features are for a frozen encoder only; a trainable one computes them on the fly (nothing silently unused)
    unite = UnifiedConfig.from_dict({**TINY, "audio_input": "semantic"})
    apply_semantic_freeze(unite, False)
    with pytest.raises(ValueError, match="on the fly"):
        check_semantic_source(unite, use_semantic_features=True)
    check_semantic_source(unite, use_semantic_features=False)
    apply_semantic_freeze(unite, True)
    check_semantic_source(unite, use_semantic_features=True)


@pytest.mark.slow
def test_unite_run_with_frozen_encoder_semantic_features_and_dit_init(tmp_path):
    write_toy_store(tmp_path / "store", num_items=16, seed=5, semantic_dim=64)
    torch.manual_seed(3)
    tiny_model().save_pretrained(tmp_path / "tts_only")
    out = tmp_path / "run"
    sets = [f"data.datasets=[{{name: toy, latents: '{tmp_path / 'store'}'}}]", "data.use_semantic_features=true",
            "data.max_frames_per_batch=240", "data.max_frames_per_item=200", "model.audio_input=semantic",
            f"train.output_dir='{out}'", "train.max_steps=2", "train.save_every=1", "train.warmup_steps=1",
            "train.freeze_semantic_encoder=true", f"train.init_dit_from='{tmp_path / 'tts_only'}'"]
    done = subprocess.run([sys.executable, str(ROOT / "train_unified.py"), "--config",
                           str(ROOT / "configs" / "unified" / "train_tiny.yaml"),
                           *[a for s in sets for a in ("--set", s)]], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "under ['dit.'] from" in done.stdout
    saved = json.loads((out / "checkpoints" / "step-00000002" / "model" / "config.json").read_text())
    assert saved["audio_input"] == "semantic" and saved["semantic_input"]["trainable"] is False
    # What the code changed after the YAML was read is recorded where it was changed.
    assert saved["derived"]["semantic_input.trainable"] == {"from": True, "to": False,
                                                            "by": "holitok_slm/train/model_setup.py"}
    start = load_file(str(tmp_path / "tts_only" / "model.safetensors"))
    step1 = load_file(str(out / "checkpoints" / "step-00000001" / "model" / "model.safetensors"))
    step2 = load_file(str(out / "checkpoints" / "step-00000002" / "model" / "model.safetensors"))
    encoder = [k for k in step2 if k.startswith("semantic_input.encoder.")]
    projection = [k for k in step2 if k.startswith("semantic_input.proj.")]
    assert encoder and all(torch.equal(step1[k], step2[k]) for k in encoder)  # frozen
    assert projection and any(not torch.equal(step1[k], step2[k]) for k in projection)  # the rest trains
    dit = [k for k in step1 if k.startswith("dit.") and k.endswith("weight")]
    # one AdamW step moves each weight by about the learning rate: the head started from the TTS-only one
    assert dit and max((step1[k] - start[k]).abs().max().item() for k in dit) < 0.01
    assert any(not torch.equal(step1[k], start[k]) for k in dit)


def test_multinode_accelerate_config_is_valid_and_leaves_zero2_to_the_training_config():
    from accelerate.commands.config.config_args import ClusterConfig

    cluster = ClusterConfig.from_yaml_file(str(ROOT / "configs" / "accelerate" / "multinode_zero2.yaml"))
    assert cluster.num_processes == 8 * cluster.num_machines and cluster.num_machines > 1
    assert cluster.mixed_precision == "bf16" and str(cluster.distributed_type).endswith("MULTI_GPU")
    base = load_training_run(ROOT / "configs" / "unified" / "train_base.yaml")
    zero = json.loads((ROOT / base.train.deepspeed_config).read_text())["zero_optimization"]["stage"]
    assert zero == 2
