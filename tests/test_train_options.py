"""Every trainer option has a type, a range and help; a bad value, a YAML syntax error or an
unknown DeepSpeed setup is one line on stderr before any model or folder is made (issue 27.6, 27.9,
29.5)."""

from pathlib import Path

import pytest

from training.run import COMMANDS
from training.run import main as run_main

# preprocess (training/preprocess/cli.py) has its own help test with its CLI
SEPARATELY_TESTED_HELP = {"preprocess"}
TRAINERS = ("vae", "vae-decoder", "dit-image", "dit-motion", "dit-full", "lora", "motion-lora", "domain-adapter")


def trainer_options(command):
    from training.train_dit import command_options as dit
    from training.train_lora import command_options as lora
    from training.train_vae import command_options as vae

    return {"vae": vae, "vae-decoder": vae, "lora": lora, "motion-lora": lora,
            "domain-adapter": lora}.get(command, dit)(command)


def _fails(capsys, argv):
    code = run_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("yaml_text,message", [
    ("train:\n  lr: abc\n", "train.lr: expected a positive number, got 'abc' (in {file})"),
    ("train:\n  lr: -1\n", "train.lr: expected a positive number, got -1 (in {file})"),
    ("train:\n  lr: .nan\n", "train.lr: expected a positive number, got nan (in {file})"),
    ("data:\n  frames: eight\n", "data.frames: expected a whole number >= 1, got 'eight' (in {file})"),
    ("train:\n  ema: no way\n", "train.ema: expected true or false, got 'no way' (in {file})"),
    ("train:\n  mixed_precision: fp8\n", "train.mixed_precision: expected one of no, fp16, bf16, got 'fp8'"),
    ("train:\n  betas: [0.9]\n", "train.betas: expected a list of 2 values, each a number in [0, 1)"),
    ("model:\n  config: big\n", "model.config: expected a mapping of options"),
    ("train:\n  lr: [1e-4\n", "config file {file} is not valid YAML"),
    ("train:\n\tlr: 1\n", "config file {file} is not valid YAML"),
])
def test_bad_values_in_a_config_file(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "x.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "out"
    err = _fails(capsys, ["vae", "--config", str(config), f"train.output_dir={out}"])
    assert message.format(file=config) in err
    assert not out.exists()  # nothing was made before the check


@pytest.mark.parametrize("item,message", [
    ("train.checkpoint_every=-3", "train.checkpoint_every: expected a whole number >= 0, got -3 (in command line)"),
    ("train.lr=abc", "train.lr: expected a positive number, got 'abc' (in command line)"),
    ("data.frames=[8", "the value of command-line option 'data.frames' is not valid YAML"),
    ("text.caption_dropout=1.5", "text.caption_dropout: expected a number in [0, 1], got 1.5"),
    ("lora.target=everything", "lora.target: expected one of all, motion, spatial_attention"),
    ("augment.camera_moves=[spin]", "augment.camera_moves: expected a list of values, each one of zoom_in"),
])
def test_bad_values_on_the_command_line(capsys, item, message):
    assert message in _fails(capsys, ["lora", item])


def test_values_are_converted_to_what_the_trainer_uses():
    from training.config import parse_args

    cfg, _ = parse_args("vae", ["train.lr=1", "train.mixed_precision=no", "model.config.ch=8"],
                        trainer_options("vae"), "")
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["mixed_precision"] == "no" and cfg["model"]["config"] == {"ch": 8}


@pytest.mark.parametrize("command", TRAINERS)
def test_every_trainer_option_has_help(command, capsys):
    from training.options import walk

    options = list(walk(trainer_options(command)))
    assert len(options) > 30
    for name, option in options:
        assert option.help.strip() and option.kind.expected, name
        option.kind.check(option.default)  # every default is a valid value
    with pytest.raises(SystemExit):
        run_main([command, "--help"])
    listing = capsys.readouterr().out
    for name, option in options:
        assert f"  {name}=" in listing and option.help in listing, name


def test_every_command_and_flag_has_help(capsys, monkeypatch):
    """run.py --help lists every command with its line; every command's --help gives each of its
    flags (and each sub-command's) a help text: argparse shows a bare flag when there is none."""
    import argparse
    from importlib import import_module

    assert run_main(["--help"]) == 0
    listing = capsys.readouterr().out
    for name, (_, line) in COMMANDS.items():
        assert f"  {name}" in listing and line in listing
    parsers = {}

    def keep(self, *args, **kwargs):  # the command's parser, caught where it would parse
        parsers.setdefault(current, self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep)
    for current, (module, _) in COMMANDS.items():
        if current in SEPARATELY_TESTED_HELP:
            continue
        with pytest.raises(SystemExit):
            import_module(module).main(current, [])
    assert set(parsers) == set(COMMANDS) - SEPARATELY_TESTED_HELP

    def bare(parser, where):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                yield from (f for name, sub in action.choices.items() for f in bare(sub, f"{where} {name}"))
            elif not (action.help and action.help.strip()):
                yield where, action.option_strings or action.dest

    assert [flag for command, parser in parsers.items() for flag in bare(parser, command)] == []


def test_deepspeed_without_cuda_refuses_and_the_log_says_what_runs(tmp_path, capsys, monkeypatch):
    """accelerate launch with a DeepSpeed config on a machine without CUDA used to train as plain
    DDP without a word."""
    import torch
    from train_helpers import make_dataset, vae_yaml

    data = make_dataset(tmp_path / "d", videos=1, images=1)
    cfg = vae_yaml(tmp_path / "v.yaml", data, tmp_path / "out", train={"steps": 1})
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "DeepSpeed ZeRO needs CUDA GPUs; this machine has none: use DDP" in _fails(capsys, ["vae", "--config", cfg])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    err = _fails(capsys, ["vae", "--config", cfg, "train.cpu=true"])
    assert "train.cpu=true asks for the CPU" in err
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        assert "deepspeed package is not installed" in _fails(capsys, ["vae", "--config", cfg])
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_main(["vae", "--config", cfg]) == 0
    assert "distributed mode: single process on cpu" in capsys.readouterr().out


@pytest.mark.parametrize("demo", ["demo.yaml", "demo_30min.yaml", "smoke.yaml"])
def test_demo_chain_stage_configs_pass_the_option_checks(demo, tmp_path):
    """demo-train writes a config per training stage and runs the trainers on it: every value it
    sets must satisfy the trainers' options."""
    import yaml

    from training.config import build_config, parse_args
    from training.demo.chain import DEFAULTS, TRAINING_STAGES, Chain

    cfg = build_config(DEFAULTS, str(Path(__file__).resolve().parents[1] / "training" / "demo" / "configs" / demo))
    cfg["workdir"] = str(tmp_path)
    chain = Chain(cfg)
    for stage in TRAINING_STAGES:
        file = tmp_path / f"{stage}.yaml"
        file.write_text(yaml.safe_dump(chain.stage_config(stage)))
        command = "vae" if stage == "vae-image" else stage
        checked, _ = parse_args(command, ["--config", str(file)], trainer_options(command), "")
        assert checked["train"]["output_dir"]


def test_a_model_config_the_model_cannot_take_is_one_line(tmp_path, capsys):
    from train_helpers import make_dataset, vae_yaml

    data = make_dataset(tmp_path / "d", videos=1, images=1)
    cfg = vae_yaml(tmp_path / "v.yaml", data, tmp_path / "out", train={"steps": 1})
    err = _fails(capsys, ["vae", "--config", cfg, "model.config.ch=abc"])
    assert "model.config is not a usable VideoVAE config" in err and "vae/config.json" in err
    assert "data.sample_size: expected a whole number >= 8, a multiple of 8, got 33" in _fails(
        capsys, ["vae", "--config", cfg, "data.sample_size=33"])
    (tmp_path / "file").write_text("x")
    assert f"{tmp_path / 'file'} is a file, not a folder" in _fails(
        capsys, ["vae", "--config", cfg, f"train.output_dir={tmp_path / 'file' / 'run'}"])
