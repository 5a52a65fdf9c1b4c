"""The shipped training configs parse for their commands (no unknown or misspelt options) and
the accelerate / DeepSpeed launch configs are valid."""

import json
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
COMMANDS = {"vae": "vae", "vae-decoder": "vae_decoder", "dit-image": "dit_image", "dit-motion": "dit_motion",
            "dit-full": "dit_full", "lora": "lora", "motion-lora": "motion_lora",
            "domain-adapter": "domain_adapter"}


@pytest.mark.parametrize("command,name", COMMANDS.items())
def test_shipped_config_parses_for_its_command(command, name):
    from training.config import parse_args

    cfg, resume = parse_args(command, ["--config", str(CONFIGS / f"{name}.yaml"), "train.steps=7"],
                             command_options(command), "test")
    assert cfg["train"]["steps"] == 7 and resume is None
    assert cfg["data"]["metadata"]


def test_motion_config_yaml_anchors_expand():
    from training.config import parse_args

    cfg, _ = parse_args("dit-motion", ["--config", str(CONFIGS / "dit_motion.yaml")], command_options("dit-motion"), "")
    odd = cfg["model"]["motion_config"]["motion_module_kwargs_odd"]
    assert odd["attention_block_types"] == ["Temporal_Self", "Global_Self"] and odd["num_attention_heads"] == 16


def test_launch_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / "accelerate_zero2.yaml"))
    assert str(config.distributed_type).endswith("DEEPSPEED")
    ds_file = Path(config.deepspeed_config["deepspeed_config_file"])
    ds = json.loads((CONFIGS.parents[1] / ds_file).read_text())
    assert ds["zero_optimization"]["stage"] == 2


def command_options(command):
    from training.train_dit import command_options as dit
    from training.train_lora import command_options as lora
    from training.train_vae import command_options as vae

    return {"vae": vae, "vae-decoder": vae, "lora": lora, "motion-lora": lora,
            "domain-adapter": lora}.get(command, dit)(command)


def test_resume_flag_forms():
    from training.config import parse_args
    from training.options import Opt, whole

    defaults = {"train": {"steps": Opt(1, whole(1), "steps")}}
    assert parse_args("x", ["--resume"], defaults, "")[1] == "latest"
    assert parse_args("x", ["--resume", "ckpt/checkpoint-00000010"], defaults, "")[1] == "ckpt/checkpoint-00000010"
    cfg, resume = parse_args("x", ["--resume", "train.steps=5"], defaults, "")
    assert resume == "latest" and cfg["train"]["steps"] == 5


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    """PyYAML alone reads 2e-3 (no dot) as a string, which reached Adam as lr='2e-3'."""
    from training.config import parse_args
    from training.options import Opt, listof, number, text, whole

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: 1e-4\n  betas: [0.5, 9E-1]\n  name: 1e4x\n")
    defaults = {"train": {"lr": Opt(0.0, number(), "lr"), "betas": Opt([], listof(number()), "betas"),
                          "name": Opt("", text(), "name"), "steps": Opt(1, whole(), "steps"),
                          "decay": Opt(0.0, number(), "decay")}}
    cfg, _ = parse_args("x", ["--config", str(config), "train.decay=-2.5e-3", "train.steps=3"], defaults, "")
    assert cfg["train"] == {"lr": 1e-4, "betas": [0.5, 0.9], "name": "1e4x", "steps": 3, "decay": -2.5e-3}
