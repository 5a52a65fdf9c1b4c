"""The shared loop's guarantees: a killed run resumes to exactly the weights of an uninterrupted
one, a kill during a save leaves the previous checkpoint usable (2-process DDP: test_train_ddp.py);
and the loop's building blocks (clipping, EMA, buckets, clips)."""

import itertools
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from easyanimate_core.errors import InputError
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


def _vae_yaml(tmp_path, meta, out, steps=10):
    return vae_yaml(tmp_path / f"{out.name}.yaml", meta, out, loss={"disc_start": 2},
                    train={"steps": steps, "checkpoint_every": 2, "checkpoints_keep": 10, "lr": 1e-3})


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("loopdata"), videos=2, images=2, corrupt=1)


def _run_py(*args):
    return [sys.executable, str(ROOT / "training" / "run.py"), *args]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(tmp_path, data):
    """Every run is a fresh process, as in real life: the uninterrupted run, the run killed with
    SIGKILL right after its first checkpoint, and the new process that resumes it."""
    from training.loop import complete_checkpoints

    straight = tmp_path / "straight"
    done = subprocess.run(_run_py("vae", "--config", _vae_yaml(tmp_path, data, straight)), env=SUBPROCESS_ENV,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]

    killed = tmp_path / "killed"
    cfg = _vae_yaml(tmp_path, data, killed)
    proc = subprocess.Popen(_run_py("vae", "--config", cfg), env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not complete_checkpoints(killed) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = complete_checkpoints(killed)
    assert done and int(done[-1].name.split("-")[1]) < 10, "the kill must land mid-run"

    resumed = subprocess.run(_run_py("vae", "--config", cfg, "--resume"), env=SUBPROCESS_ENV, capture_output=True,
                             text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    for name in ("model.safetensors", "model_1.safetensors"):  # autoencoder, discriminators
        assert _same(_tensors(straight / "checkpoints" / "checkpoint-00000010" / name),
                     _tensors(killed / "checkpoints" / "checkpoint-00000010" / name))
    assert _same(_tensors(straight / "vae" / "diffusion_pytorch_model.safetensors"),     # EMA export
                 _tensors(killed / "vae" / "diffusion_pytorch_model.safetensors"))


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, data, monkeypatch):
    from training import loop
    from training.loop import complete_checkpoints
    from training.train_dit import main

    models = write_models(tmp_path / "models")
    motion_model = {**image_dit_config(), **motion_config()}
    # a warm-up across the resume point: the lr schedule's position must come back too
    sections = {"model": {"config": motion_model},
                "train": {"steps": 6, "checkpoint_every": 2, "checkpoints_keep": 5, "warmup_steps": 4}}
    straight = dit_yaml(tmp_path / "s.yaml", models, data, tmp_path / "straight", **sections)
    assert main("dit-motion", ["--config", straight]) == 0

    broken = dit_yaml(tmp_path / "b.yaml", models, data, tmp_path / "broken", **sections)
    original = loop.write_checkpoint

    def dies_at_step_4(accelerator, folder, objects, train_cfg):
        if "00000004" in str(folder):
            Path(folder, "model.safetensors").write_bytes(b"half a fi")   # partial write, then death
            raise KeyboardInterrupt("killed during save")
        return original(accelerator, folder, objects, train_cfg)

    monkeypatch.setattr(loop, "write_checkpoint", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        main("dit-motion", ["--config", broken])
    monkeypatch.setattr(loop, "write_checkpoint", original)
    # the interrupted run closed its TensorBoard event file (no writer thread left)
    assert not [t for t in threading.enumerate() if type(t).__name__ == "_AsyncWriterThread" and t.is_alive()]
    assert [p.name for p in complete_checkpoints(tmp_path / "broken")] == ["checkpoint-00000002"]

    assert main("dit-motion", ["--config", broken, "--resume", "latest"]) == 0
    a = _tensors(tmp_path / "straight" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = _tensors(tmp_path / "broken" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert _same(a, b)
    # the CSV reads like one run: every step once
    import csv
    with open(tmp_path / "broken" / "losses.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["name"] == "loss"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert losses(tmp_path / "broken", "lr") == losses(tmp_path / "straight", "lr") == [
        pytest.approx(1e-3 * min(1.0, (k + 1) / 4)) for k in range(1, 7)]


def test_resume_from_missing_checkpoint_is_one_clear_error(tmp_path, data):
    from easyanimate_core.errors import InputError
    from training.train_vae import main

    with pytest.raises(InputError, match="found no complete checkpoint"):
        main("vae", ["--config", _vae_yaml(tmp_path, data, tmp_path / "none"), "--resume"])
    with pytest.raises(InputError, match="is not a complete checkpoint folder"):
        main("vae", ["--config", _vae_yaml(tmp_path, data, tmp_path / "none"), "--resume", str(tmp_path)])


def test_weights_digest_sees_a_one_bit_difference():
    from training.loop import weights_digest

    a = torch.nn.Linear(3, 3)
    b = torch.nn.Linear(3, 3)
    b.load_state_dict(a.state_dict())
    assert weights_digest([a]) == weights_digest([b])
    with torch.no_grad():
        b.weight[0, 0] = torch.nextafter(b.weight[0, 0], torch.tensor(1.0))
    assert weights_digest([a]) != weights_digest([b])


class _FakeAccelerator:
    @staticmethod
    def clip_grad_norm_(params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _grad_norm_after(step, norm, max_grad_norm=1.0):
    from training.loop import clip_gradients

    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), norm / 2.0)   # |grad| = norm
    clip_gradients(_FakeAccelerator(), [p], step, max_grad_norm)
    return float(p.grad.norm())


def test_adaptive_gradient_clipping_follows_the_reference_rule():
    assert _grad_norm_after(0, 10.0) == pytest.approx(5.0, rel=1e-4)     # starts at 5 x max
    assert _grad_norm_after(500, 10.0) == pytest.approx(3.0, rel=1e-4)   # linear decay
    assert _grad_norm_after(2000, 0.5) == pytest.approx(0.5, rel=1e-4)   # under the limit: untouched
    assert _grad_norm_after(2000, 3.0) == pytest.approx(1.0, rel=1e-4)   # ordinary clip
    assert _grad_norm_after(1000, 8.0) == pytest.approx(1.0, rel=1e-4)   # the rule starts after step 1000
    assert _grad_norm_after(1001, 8.0) == pytest.approx(1.0 / 8.0, rel=1e-4)
    assert _grad_norm_after(2000, 8.0) == pytest.approx(1.0 / 8.0, rel=1e-4)   # abnormal: clip harder
    assert _grad_norm_after(2000, 50.0) == pytest.approx(0.1, rel=1e-4)  # at most 10x harder


def test_buckets_and_frame_rules():
    from training import buckets

    assert buckets.closest_ratio(720, 1280) == 0.57
    h, w = buckets.bucket_size(0.57, 256)
    assert (h, w) == (192, 336) and h % 16 == 0 and w % 16 == 0
    assert buckets.frame_bucket([30, 17], 8, 144) == 16
    assert buckets.frame_bucket([30, 40], 8, 25) == 25            # 1 + 3 x 8 form is kept
    assert buckets.frame_bucket([1, 1], 8, 144) == 1
    g = torch.Generator().manual_seed(0)
    draws = [buckets.random_frame_crop(144, 8, g) for _ in range(2000)]
    assert 0.85 < draws.count(144) / 2000 < 0.95 and set(draws) <= set(range(8, 145, 8))


def test_clip_sampling_stays_inside_the_middle_of_the_video():
    from training.data import clip_indices

    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        idx = clip_indices(100, 16, 2, g)
        assert len(idx) == 16 and idx[0] >= 9 and idx[-1] < 90
        assert all(b - a == 2 for a, b in itertools.pairwise(idx))
    assert clip_indices(10, 8, 4, g)[-1] <= 9     # short video: the stride shrinks to fit


def test_a_list_of_strides_gives_each_clip_one_of_them(tmp_path):
    import json

    import numpy as np

    from easyanimate_core.errors import InputError
    from easyanimate_core.video_io import write_video
    from training.data import Item, MediaDataset, load_entries

    frames = np.repeat(np.arange(0, 240, 6, dtype=np.uint8)[:, None, None, None], 16 * 16 * 3).reshape(40, 16, 16, 3)
    write_video(tmp_path / "ramp.mp4", frames, fps=8, crf=0, pix_fmt="yuv444p")  # lossless: frame i is 6 i
    (tmp_path / "m.json").write_text(json.dumps([{"file_path": "ramp.mp4", "text": "", "type": "video"}]))
    entries = load_entries(str(tmp_path / "m.json"), None)
    cfg = {"types": "video", "sample_size": 16, "frames": 8, "stride": [1, 3]}
    dataset = MediaDataset(entries, cfg)
    steps = set()
    for k in range(20):
        index = (dataset[Item(0, 16, 16, 8, (k,))]["pixels"][0, :, 0, 0] + 1) * 127.5 / 6
        steps |= set(index.diff().round().int().tolist())
    assert steps == {1, 3}
    for bad in (0, [], [2, 0], 1.5):
        with pytest.raises(InputError, match="data.stride"):
            MediaDataset(entries, {**cfg, "stride": bad})


def test_progressive_resolution_schedule(tmp_path, data):
    from training.data import BatchPlan, load_entries

    cfg = {"types": "both", "batch_size": 1, "sample_size": 32, "frames": 8, "stride": 1, "buckets": False,
           "random_frame_crop": False, "resolution_schedule": [[0, 32], [3, 64]]}
    plan = BatchPlan(load_entries(str(data), None), cfg, 0, 8)
    sizes = [item[0].height for item in plan.epoch_batches(0)]
    assert sizes[:3] == [32, 32, 32] and set(sizes[3:]) == {64}
    assert plan.unreadable == 1


def test_data_parallel_ranks_take_batches_of_one_type_in_each_step(tmp_path):
    """A step waits for its slowest rank: a still batch must not run beside a clip batch."""
    from training.data import BatchPlan, load_entries

    entries = load_entries(str(make_dataset(tmp_path / "d", videos=7, images=9)), None)
    cfg = {"types": "both", "batch_size": 1, "sample_size": 32, "frames": 8, "stride": 1, "buckets": False,
           "random_frame_crop": False}
    for epoch in range(4):
        ranks = [BatchPlan(entries, cfg, 0, 8, rank=r, world_size=2).epoch_batches(epoch) for r in (0, 1)]
        assert len(ranks[0]) == len(ranks[1]) == 7  # 3 video steps + 4 image steps; a lone batch waits out
        kinds = [[entries[batch[0].index]["type"] for batch in rank] for rank in ranks]
        assert kinds[0] == kinds[1] and set(kinds[0]) == {"image", "video"}
        used = [batch[0].index for rank in ranks for batch in rank]
        assert len(set(used)) == len(used)
    single = BatchPlan(entries, cfg, 0, 8).epoch_batches(0)
    assert len(single) == 16  # one process: every batch, in the shuffled order


def test_sample_that_fails_to_decode_is_replaced_and_counted(tmp_path, capsys):
    import json

    from training.data import BatchPlan, Item, MediaDataset, load_entries
    from training.train_vae import main

    meta = make_dataset(tmp_path / "d", videos=2, images=0)
    records = json.loads(meta.read_text())
    (tmp_path / "d" / "truncated.mp4").write_bytes((tmp_path / "d" / "video_0.mp4").read_bytes()[:300])
    # sizes in the metadata: the planner trusts them, so the damage only shows when decoding
    records.append({"file_path": "truncated.mp4", "text": "cut", "type": "video", "width": 32, "height": 32,
                    "num_frames": 12})
    meta.write_text(json.dumps(records))
    entries = load_entries(str(meta), None)
    cfg = {"types": "video", "batch_size": 1, "sample_size": 32, "frames": 9, "stride": 1, "buckets": False,
           "random_frame_crop": False}
    assert BatchPlan(entries, cfg, 0, 8).unreadable == 0
    sample = MediaDataset(entries, cfg)[Item(2, 32, 32, 9, (0,))]
    assert sample["skipped"] == 1 and sample["key"].endswith("video_0.mp4")
    assert main("vae", ["--config", _vae_yaml(tmp_path, meta, tmp_path / "out", steps=3),
                        "data.types=video"]) == 0
    assert "unreadable samples were skipped" in capsys.readouterr().out


def test_memory_cache_serves_the_same_clips_without_reopening_files(tmp_path):
    from training.data import BatchPlan, MediaDataset, load_entries

    meta = make_dataset(tmp_path / "d", videos=3, images=1)
    entries = load_entries(str(meta), None)
    cfg = {"types": "both", "batch_size": 1, "sample_size": 32, "frames": 8, "stride": 1, "buckets": False,
           "random_frame_crop": False}
    items = [batch[0] for batch in BatchPlan(entries, cfg, 0, 8).epoch_batches(0)]
    plain = [MediaDataset(entries, cfg)[item]["pixels"] for item in items]
    cached = MediaDataset(entries, {**cfg, "memory_cache_mb": 1})
    first = [cached[item]["pixels"] for item in items]
    assert len(cached.decoded) == 3 and cached.cached_bytes == 3 * 12 * 32 * 32 * 3
    too_small = MediaDataset(entries, {**cfg, "memory_cache_mb": 0.01})  # 10 KiB < one 36 KiB clip
    assert all(torch.equal(too_small[item]["pixels"], a) for item, a in zip(items, plain))
    assert not too_small.decoded
    for path in cached.decoded:  # the cache alone must serve the second epoch
        Path(path).unlink()
    second = [cached[item]["pixels"] for item in items]
    for a, b, c in zip(plain, first, second):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_ema_averages_with_the_warm_up_decay_and_follows_the_model_to_its_device():
    from training.ema import EMA, final_weights

    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)                                   # decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], start + 0.9)
    assert torch.equal(final_weights(model, ema).weight, ema.shadow["weight"])
    assert torch.equal(final_weights(model, None).weight, model.weight)
    # the trainers build the EMA before accelerate moves the model (CPU -> GPU); a resumed state
    # loads on the CPU: the shadow must follow the weights ("meta" stands in for a GPU here)
    resumed = EMA(model, decay=0.9)
    resumed.load_state_dict(ema.state_dict())
    model.to("meta")
    for state in (ema, resumed):
        state.update(model)
        assert state.shadow["weight"].device.type == "meta" and state.updates == 2


def test_resuming_an_older_checkpoint_keeps_what_it_writes_and_sets_later_ones_aside(tmp_path, data):
    import shutil

    from training.loop import checkpoint_dir, complete_checkpoints
    from training.train_dit import main

    models = write_models(tmp_path / "models")
    sections = {"model": {"config": {**image_dit_config(), **motion_config()}},
                "train": {"steps": 6, "checkpoint_every": 2, "checkpoints_keep": 5}}
    straight = dit_yaml(tmp_path / "s.yaml", models, data, tmp_path / "straight", **sections)
    assert main("dit-motion", ["--config", straight]) == 0
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "straight", run)
    sections["train"]["checkpoints_keep"] = 1
    again = dit_yaml(tmp_path / "r.yaml", models, data, run, **sections)
    older = complete_checkpoints(run)[0]
    assert main("dit-motion", ["--config", again, "--resume", str(older)]) == 0
    # the checkpoint the resumed run wrote last is the one kept; the abandoned future is set aside
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-00000006"]
    assert (checkpoint_dir(run) / "superseded-checkpoint-00000006").is_dir()
    a = _tensors(tmp_path / "straight" / "transformer" / "diffusion_pytorch_model.safetensors")
    b = _tensors(run / "transformer" / "diffusion_pytorch_model.safetensors")
    assert _same(a, b)


def test_a_checkpoint_inside_a_gradient_accumulation_is_refused(tmp_path, data):
    from training.train_dit import main

    models = write_models(tmp_path / "models")
    config = dit_yaml(tmp_path / "a.yaml", models, data, tmp_path / "out",
                      model={"config": {**image_dit_config(), **motion_config()}},
                      train={"steps": 4, "checkpoint_every": 3, "gradient_accumulation_steps": 2})
    with pytest.raises(InputError, match="checkpoint_every 3 is not a multiple of train.gradient_accumulation_steps 2"):
        main("dit-motion", ["--config", config])


def test_resuming_with_another_data_plan_is_refused(tmp_path, data):
    from training.loop import complete_checkpoints
    from training.train_dit import main

    models = write_models(tmp_path / "models")
    sections = {"model": {"config": {**image_dit_config(), **motion_config()}},
                "train": {"steps": 4, "checkpoint_every": 2}}
    config = dit_yaml(tmp_path / "a.yaml", models, data, tmp_path / "run", **sections)
    assert main("dit-motion", ["--config", config]) == 0
    first = str(complete_checkpoints(tmp_path / "run")[0])
    # the same data, the same seed: the position is meaningful and the run resumes
    assert main("dit-motion", ["--config", config, "--resume", first, "train.steps=6"]) == 0
    with pytest.raises(InputError, match="belongs to another batch plan"):
        main("dit-motion", ["--config", config, "--resume", first, "train.seed=7"])
