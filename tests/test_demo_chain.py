"""The demo chain end to end at toy size (smoke.yaml: 32x32 frames, 1-2 steps per stage), its
resumability, and the world's captioner."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from training.demo import captioner, world

SMOKE = Path(__file__).resolve().parents[1] / "training" / "demo" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from training.demo.chain import main

    root = tmp_path_factory.mktemp("demo")
    argv = ["--config", str(SMOKE), f"workdir={root / 'work'}", f"output={root / 'model'}"]
    assert main("demo-train", argv) == 0
    return root, argv


@pytest.mark.slow
def test_chain_writes_a_model_folder_in_the_published_layouts(smoke_run):
    from easyanimate_core.models.lora import linear_layers, load_lora
    from easyanimate_core.models.transformer import load_transformer
    from easyanimate_core.models.vae import load_vae

    root, _ = smoke_run
    model = root / "model"
    transformer = load_transformer(model / "transformer")
    assert transformer.config["basic_block_type"] == "global_motionmodule"   # stage 2 put motion modules in
    split = load_transformer(model / "pixart_base", motion_module=model / "motion_module.safetensors")
    assert split.config == transformer.config                                # shipped split, made by the export
    vae = load_vae(model / "vae")
    assert vae.scaling_factor != 1.0                                          # calibrated, not the placeholder
    stage1 = yaml.safe_load((root / "work" / "configs" / "vae.yaml").read_text())["model"]
    assert stage1["inflate"] and stage1["pretrained"] == str(root / "work" / "runs" / "vae-image" / "vae")
    still_stage = yaml.safe_load((root / "work" / "configs" / "vae-image.yaml").read_text())
    assert still_stage["data"]["types"] == "image" and not still_stage["model"].get("inflate")
    layers = linear_layers(transformer)
    lora = load_lora(str(model / "motion_lora" / "pan_left.safetensors"), layers, kind="motion_lora")
    assert lora.pairs and all("attn_temporal" in name for name in lora.pairs)
    assert (model / "tokenizer" / "spiece.model").is_file() and (model / "text_encoder" / "config.json").is_file()
    results = json.loads((root / "work" / "evaluation.json").read_text())
    assert set(results["prompts"]["accuracy"]) == {"color", "shape", "motion", "background", "all"}
    assert results["prompts"]["clips"] == 2 and "lora" in results
    made_for = yaml.safe_load((model / "generate.yaml").read_text())   # what users get is what was scored
    assert made_for["seam"] == results["settings"]["seam"] == "blend"
    # the metadata the DiT trained on never holds a held-out caption
    _, held = world.held_out_split(seed=0)
    rows = json.loads((root / "work" / "data" / "all.json").read_text())
    assert rows and not {r["text"] for r in rows} & {s.caption for s in held}
    assert {r["type"] for r in rows} == {"video", "image"}


@pytest.mark.slow
def test_rerun_skips_every_finished_stage(smoke_run, capsys):
    from training.demo.chain import main

    root, argv = smoke_run
    before = json.loads((root / "work" / "timings.json").read_text())
    capsys.readouterr()
    assert main("demo-train", argv) == 0
    out = capsys.readouterr().out
    assert "running" not in out and out.count("done already") == len(before)
    assert json.loads((root / "work" / "timings.json").read_text()) == before


def test_interrupted_training_stage_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    import copy

    from training.demo.chain import DEFAULTS, Chain

    cfg = copy.deepcopy(DEFAULTS)
    cfg["workdir"] = str(tmp_path)
    chain = Chain(cfg)
    calls = []
    monkeypatch.setattr(chain, "run_command", lambda module, command, argv, processes=1: calls.append((command, argv)))
    chain.train("dit-full")
    (tmp_path / "runs" / "dit-full" / "checkpoints" / "checkpoint-00000100").mkdir(parents=True)
    chain.train("dit-full")
    assert "--resume" not in calls[0][1] and calls[1][1][-2:] == ["--resume", "latest"]
    written = (tmp_path / "configs" / "dit-full.yaml").read_text()
    assert str(tmp_path / "runs" / "dit-motion" / "transformer") in written   # stage 3 starts from stage 2


def test_unknown_option_is_one_sentence():
    from easyanimate_core.errors import InputError
    from training.demo.chain import parse

    with pytest.raises(InputError, match="unknown option 'wrold'"):
        parse(["--config", str(SMOKE), "wrold.videos=3"])
    cfg = parse(["--config", str(SMOKE), "stages.dit-full.train.steps=7"])
    assert cfg["stages"]["dit-full"]["train"] == {"steps": 7, "checkpoint_every": 0, "ema": False, "warmup_steps": 0}


def test_captioner_reads_clips_and_keeps_held_out_prompts_unseen():
    train, held = world.held_out_split(seed=0)
    text, reason = captioner.caption_clip(world.render_scene(train[0], 16, seed=5))
    assert (text, reason) == (train[0].caption, None)
    assert captioner.caption_clip(world.render_scene(held[0], 16, seed=5)) == (None, "held_out")
    still = np.full((8, 64, 64, 3), 120, np.uint8)
    assert captioner.caption_clip(still) == (None, "unreadable")


@pytest.mark.slow
def test_sharded_preprocess_writes_the_file_one_process_writes(tmp_path):
    """With processes=2 a preprocess stage runs as two shards merged afterwards; the chain's later
    stages (and so the model) must see the same file as from one process."""
    import copy

    from training.demo.chain import DEFAULTS, Chain

    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(workdir=str(tmp_path / "world"), world={**cfg["world"], "videos": 3, "size": 32})
    Chain(cfg).render_world()
    written = {}
    for processes in (1, 2):
        chain = Chain({**cfg, "workdir": str(tmp_path / f"p{processes}"), "processes": processes})
        out = tmp_path / f"p{processes}" / "split.jsonl"
        argv = ["--input", str(tmp_path / "world" / "raw"), "--clips-dir", str(out.parent / "clips")]
        chain.preprocess("split", argv, out, "source")
        written[processes] = out.read_text()
    assert written[2] == written[1] and written[1].count("\n") == 3


@pytest.mark.parametrize("name", ["demo.yaml", "demo_30min.yaml"])
def test_shipped_demo_configs_build_a_vae_and_dit_that_fit_together(name):
    """Each chain config's VAE turns a 16-frame 32x32 clip into latents its DiT (with the motion
    modules of stage 2) takes, and the DiT's output has the VAE's latent shape (eps and variance)."""
    import torch

    from easyanimate_core.models.transformer import VideoTransformer
    from easyanimate_core.models.vae import VideoVAE
    from training.demo.chain import parse

    cfg = parse(["--config", str(SMOKE.parent / name)])
    stages = cfg["stages"]
    torch.manual_seed(0)
    vae = VideoVAE.from_config(dict(stages["vae"]["model"]["config"])).eval()
    dit = VideoTransformer.from_config({**stages["dit-image"]["model"]["config"],
                                        **stages["dit-motion"]["model"]["motion_config"]}).eval()
    size = cfg["world"]["size"]
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 16, size, size)).mode()
        out = dit(latents, timestep=torch.tensor([500]), encoder_hidden_states=torch.zeros(1, 3, 32))
    assert latents.shape[1] == stages["dit-image"]["model"]["config"]["in_channels"]
    assert latents.shape[2] == 4 and latents.shape[-1] == stages["dit-image"]["model"]["config"]["sample_size"]
    assert out.shape == (1, 2 * latents.shape[1], *latents.shape[2:])
