"""``--resume`` never runs code from a checkpoint folder and says in one line what is wrong with a
damaged, incomplete, old-format or foreign checkpoint (issue 27.1, 27.6)."""

import pickle
import shutil

import pytest
import torch
from train_helpers import make_dataset, vae_yaml

from training.run import main as run_main


class Payload:
    """Unpickling this writes a marker file: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-step VAE run with a checkpoint at every step; returns (config, output_dir, dataset)."""
    root = tmp_path_factory.mktemp("resume")
    data = make_dataset(root / "data", videos=1, images=1)
    out = root / "run"
    cfg = vae_yaml(root / "vae.yaml", data, out, train={"steps": 2, "checkpoint_every": 1, "checkpoints_keep": 5,
                                                         "lr": 1e-3})
    assert run_main(["vae", "--config", cfg]) == 0
    return cfg, out, data


def _resume(cfg, checkpoint, capsys, out, *extra):
    """Resume into ``out``, never into the shared run folder of ``finished``: a resumed run that
    wrote there would change what the other tests compare against."""
    code = run_main(["vae", "--config", cfg, "--resume", str(checkpoint), f"train.output_dir={out}", *extra])
    err = capsys.readouterr().err.strip()
    return code, err


def _copy(finished, tmp_path, step=1):
    source = finished[1] / "checkpoints" / f"checkpoint-{step:08d}"
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def test_checkpoint_holds_no_pickle(finished):
    folder = finished[1] / "checkpoints" / "checkpoint-00000002"
    names = {p.name for p in folder.iterdir()}
    assert {"run.json", "model.safetensors", "optimizer_0.json", "state_0.json", "rng_0.safetensors"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".bin", ".pt"))]


def test_crafted_pickle_is_never_loaded(finished, tmp_path, capsys):
    cfg = finished[0]
    marker = tmp_path / "owned"
    pickle.loads(pickle.dumps(Payload(marker))).close()  # the payload works: unpickling it writes the marker
    assert marker.exists()
    marker.unlink()
    old_style = _copy(finished, tmp_path)
    (old_style / "run.json").unlink()
    (old_style / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(marker)))
    code, err = _resume(cfg, old_style, capsys, tmp_path / "old_out")
    assert code == 1 and not marker.exists()
    assert len(err.splitlines()) == 1 and "old pickle format" in err and "convert-checkpoint" in err
    # the converter reads with weights_only=True: it refuses the payload instead of running it
    assert run_main(["convert-checkpoint", str(old_style)]) == 1
    err = capsys.readouterr().err.strip()
    assert not marker.exists() and len(err.splitlines()) == 1 and "cannot be read safely" in err
    # a pickle dropped into a current checkpoint is simply not part of it
    current = _copy(finished, tmp_path / "current")
    (current / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload(marker)))
    (current / "optimizer.bin").write_bytes(pickle.dumps(Payload(marker)))
    current_out = tmp_path / "current_out"
    assert _resume(cfg, current, capsys, current_out)[0] == 0 and not marker.exists()
    assert (current_out / "vae" / "diffusion_pytorch_model.safetensors").is_file()  # it did resume and finish


def test_old_format_converts_and_resumes_to_the_same_weights(finished, tmp_path, capsys):
    """An old accelerate checkpoint (custom states and optimizer as torch.save pickles) converts
    and resumes exactly where the new format would."""
    from safetensors.torch import load_file

    from training.state_files import load_state

    cfg, out, _ = finished
    old = _copy(finished, tmp_path)
    for state in sorted(old.glob("state_*.json")) + sorted(old.glob("optimizer_*.json")):
        kind, index = state.stem.split("_")
        name = f"custom_checkpoint_{index}.pkl" if kind == "state" else (
            "optimizer.bin" if index == "0" else f"optimizer_{index}.bin")
        torch.save(load_state(state.with_suffix(""), state.stem), old / name)
        state.unlink()
        state.with_suffix(".safetensors").unlink()
    (old / "run.json").unlink()
    weights = sorted(old.glob("model*.safetensors"))
    for file in weights:  # without the model's safetensors weights nothing is converted or deleted
        file.rename(file.with_suffix(".hidden"))
    assert run_main(["convert-checkpoint", str(old)]) == 1
    assert "has no model*.safetensors weights" in capsys.readouterr().err
    assert (old / "custom_checkpoint_0.pkl").is_file()
    for file in weights:
        file.with_suffix(".hidden").rename(file)
    assert run_main(["convert-checkpoint", str(old)]) == 0
    resumed_out = tmp_path / "resumed"
    code, err = _resume(cfg, old, capsys, resumed_out)
    assert code == 0, err
    straight = load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))
    again = load_file(str(resumed_out / "vae" / "diffusion_pytorch_model.safetensors"))
    assert straight.keys() == again.keys() and all(torch.equal(straight[k], again[k]) for k in straight)


@pytest.mark.parametrize("damage,expected", [
    ("cut", "is damaged"),
    ("no_optimizer", "has no optimizer_0.json"),
    ("garbled_json", "is damaged"),
    ("not_a_checkpoint", "is not a complete checkpoint folder"),
])
def test_damaged_checkpoint_is_one_line(finished, tmp_path, capsys, damage, expected):
    folder = _copy(finished, tmp_path)
    if damage == "cut":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "no_optimizer":
        (folder / "optimizer_0.json").unlink()
    elif damage == "garbled_json":
        (folder / "state_1.json").write_text("{not json")
    else:
        (folder / "run.json").unlink()
    code, err = _resume(finished[0], folder, capsys, tmp_path / "out")
    assert code == 1 and len(err.splitlines()) == 1 and expected in err, err


def test_a_different_model_and_a_changed_lr_are_named(finished, tmp_path, capsys):
    cfg, _, _ = finished
    folder = _copy(finished, tmp_path)
    code, err = _resume(cfg, folder, capsys, tmp_path / "model", "model.config.latent_channels=8")
    assert code == 1 and len(err.splitlines()) == 1 and "holds a different model" in err, err
    code = run_main(["vae", "--config", cfg, "--resume", str(folder), "train.lr=0.5",
                     f"train.output_dir={tmp_path / 'lr'}"])
    assert code == 0
    assert "train.lr is 0.5 but the checkpoint ran with 0.001" in capsys.readouterr().out
