"""2-process CPU DDP through ``accelerate launch`` (gloo): the VAE and DiT trainers end with
identical weights on both ranks (the loop compares a SHA-256 of every rank's parameters)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_helpers import dit_yaml, image_dit_config, make_dataset, motion_config, vae_config, write_models

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ddpdata"), videos=2, images=2)


def _launch_two(args, tmp_path):
    port = str(29500 + os.getpid() % 1000)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
           str(ROOT / "training" / "run.py"), *args]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)


def test_two_process_cpu_ddp_vae(tmp_path, data):
    cfg = {"model": {"config": vae_config()},
           "loss": {"disc_start": 1, "disc_2d_channels": 8, "disc_2d_layers": 2, "disc_3d_channels": [8, 8]},
           "data": {"metadata": str(data), "batch_size": 1, "sample_size": 32, "frames": 9},
           "train": {"output_dir": str(tmp_path / "vae"), "steps": 3, "checkpoint_every": 0}}
    (tmp_path / "vae.yaml").write_text(yaml.safe_dump(cfg))
    vae = _launch_two(["vae", "--config", str(tmp_path / "vae.yaml")], tmp_path)
    assert vae.returncode == 0, vae.stderr[-3000:]
    assert "weights identical on all 2 processes" in vae.stdout
    assert (tmp_path / "vae" / "vae" / "diffusion_pytorch_model.safetensors").is_file()


def test_two_process_cpu_ddp_dit(tmp_path, data):
    models = write_models(tmp_path / "models")
    cfg = dit_yaml(tmp_path / "d.yaml", models, data, tmp_path / "dit", data={"batch_size": 1},
                   model={"config": {**image_dit_config(), **motion_config()}}, train={"steps": 3})
    dit = _launch_two(["dit-full", "--config", cfg], tmp_path)
    assert dit.returncode == 0, dit.stderr[-3000:]
    assert "weights identical on all 2 processes" in dit.stdout
