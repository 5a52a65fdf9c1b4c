"""2-process CPU DDP through ``accelerate launch`` (gloo): the VAE and DiT trainers end with
identical weights on both ranks (the loop compares a SHA-256 of every rank's parameters), and the
learning-rate schedule advances once per step whatever the number of processes, and a resumed DDP
run (every rank reading the checkpoint rank 0 wrote) continues it with the ranks still identical.

Both trainers run back to back in one launch (as chained stages would), which halves the cost
of starting the launcher and its two worker processes."""

import pytest
from train_helpers import (
    ROOT,
    SUBPROCESS_ENV,
    dit_yaml,
    image_dit_config,
    losses,
    make_dataset,
    motion_config,
    vae_yaml,
    write_models,
)

# the launched script: each argument is one run.py command line, run in order in the same processes
CHAIN = f"""import shlex, sys
sys.path.insert(0, {str(ROOT)!r})
from training.run import main
for line in sys.argv[1:]:
    assert main(shlex.split(line)) == 0, line
"""


def _launch_two(script, lines, tmp_path):
    from training.loop import launch_data_parallel

    return launch_data_parallel(2, [str(script), *lines], env=SUBPROCESS_ENV, capture_output=True, text=True,
                                timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_two_process_cpu_ddp_vae_then_dit(tmp_path):
    data = make_dataset(tmp_path / "data", videos=2, images=2)
    vae = vae_yaml(tmp_path / "vae.yaml", data, tmp_path / "vae", loss={"disc_start": 1}, train={"steps": 3})
    models = write_models(tmp_path / "models")
    dit = dit_yaml(tmp_path / "d.yaml", models, data, tmp_path / "dit", data={"batch_size": 1},
                   model={"config": {**image_dit_config(), **motion_config()}},
                   train={"steps": 3, "lr": 1e-3, "warmup_steps": 4})
    script = tmp_path / "chain.py"
    script.write_text(CHAIN)
    # the third line resumes the DiT run for two more steps: both ranks read rank 0's checkpoint
    run = _launch_two(script, [f"vae --config {vae}", f"dit-full --config {dit}",
                               f"dit-full --config {dit} train.steps=5 --resume"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("weights identical on all 2 processes") == 3, run.stdout[-3000:]
    assert run.stdout.count("distributed mode: DDP over 2 processes (gloo backend, cpu)") == 3, run.stdout[-3000:]
    assert "at step 3" in run.stdout and "done: 5 steps" in run.stdout
    assert (tmp_path / "vae" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "dit" / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    # linear warm-up over 4 steps: after step k the factor is (k + 1) / 4, as on one process
    assert losses(tmp_path / "dit", "lr") == pytest.approx([1e-3 * min(1.0, (k + 1) / 4) for k in (1, 2, 3, 4, 5)])
