"""The one training loop every trainer shares.

A trainer builds its models, optimizers and a ``step_fn(batch, step, generator) -> {name: loss}``
that does forward, backward and the optimizer step(s); :func:`train` then runs it under
accelerate (one process, DDP, multi-node, DeepSpeed: whatever ``accelerate launch`` set up) and
owns everything around it:

* reproducibility: every step's randomness comes from a generator seeded by (seed, step, rank) and
  the global RNG is re-seeded the same way, so the weights a run reaches depend only on the seed,
  never on where it was interrupted;
* checkpoints every ``checkpoint_every`` steps (models, optimizers, schedulers, EMA, data
  position, RNG; safetensors + JSON only, see :mod:`training.checkpoint`) written to a temporary
  folder and renamed into place, so a kill during a save leaves the previous checkpoint the latest
  complete one;
* ``resume`` ("latest" or a checkpoint folder), logging to TensorBoard and a CSV, a loss-curve PNG
  at the end, a progress bar with ETA, validation every ``validation_every`` steps.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch

from easyanimate_core.errors import InputError
from training.checkpoint import RUN_FILE, read_checkpoint, write_checkpoint
from training.data import seeded_generator
from training.options import Opt, choice, flag, path, whole

CHECKPOINT_PREFIX = "checkpoint-"

LR_SCHEDULES = ("constant", "constant_with_warmup", "cosine")  # lr_schedule's kinds

# Options of the loop itself; every trainer includes them in its options under "train".
LOOP_OPTIONS = {
    "output_dir": Opt("outputs/run", path(), "folder for checkpoints, logs and the exported model"),
    "seed": Opt(42, whole(), "seed of every random draw (weights, data order, noise)"),
    "steps": Opt(1000, whole(1), "training steps (batches) to run in total"),
    "checkpoint_every": Opt(500, whole(), "save a checkpoint every N steps (0: only at the end)"),
    "checkpoints_keep": Opt(3, whole(), "complete checkpoints kept; older ones are deleted (0: keep all)"),
    "log_every": Opt(1, whole(1), "write losses to the CSV / TensorBoard every N steps"),
    "validation_every": Opt(0, whole(), "run validation every N steps (0: never)"),
    "mixed_precision": Opt("no", choice("no", "fp16", "bf16", aliases={False: "no", None: "no"}),
                           "autocast precision of the forward pass"),
    "gradient_accumulation_steps": Opt(1, whole(1), "batches whose gradients add up to one optimizer step"),
    "cpu": Opt(False, flag(), "train on the CPU even where a GPU is present"),
    # image batches skip the motion modules, so the set of used parameters changes per batch
    "find_unused_parameters": Opt(True, flag(), "DDP: allow parameters without a gradient in a step"),
}


def launch_data_parallel(processes: int, script_args: list[str], env: dict | None = None, **run_options):
    """``python <script_args>`` as ``processes`` DDP ranks on this machine through accelerate's
    launcher (without a GPU the trainers form a gloo group on the CPU), one thread per rank.
    ``env`` entries are added to this process's environment; ``run_options`` go to
    ``subprocess.run``. Returns its CompletedProcess."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:  # a free port for the process group's rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), *script_args]
    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, check=False, **run_options)


def check_deepspeed_can_run(train_cfg: dict) -> None:
    """``accelerate launch`` with a DeepSpeed config sets ACCELERATE_USE_DEEPSPEED; without CUDA
    accelerate would fall back to plain CPU DDP without a word (we pass ``cpu=True`` there), so a
    ZeRO run that cannot happen stops here instead."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() not in ("1", "true", "yes"):
        return
    if train_cfg["cpu"] or not torch.cuda.is_available():
        where = "train.cpu=true asks for the CPU" if train_cfg["cpu"] else "this machine has none"
        raise InputError(f"DeepSpeed ZeRO needs CUDA GPUs; {where}: use DDP (accelerate launch --multi_gpu) "
                         f"or run on GPUs.")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise InputError("accelerate was launched with a DeepSpeed config but the deepspeed package is not "
                         "installed: pip install deepspeed, or launch DDP with accelerate launch --multi_gpu.")


def distributed_mode(accelerator) -> str:
    """What actually runs, in words, for the log."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is not None:
        return f"DeepSpeed ZeRO-{plugin.zero_stage} over {accelerator.num_processes} processes"
    if accelerator.num_processes == 1:
        return f"single process on {accelerator.device.type}"
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "unknown"
    return f"DDP over {accelerator.num_processes} processes ({backend} backend, {accelerator.device.type})"


def make_accelerator(train_cfg: dict):
    from easyanimate_core.video_io import check_writable_folder

    check_deepspeed_can_run(train_cfg)
    check_writable_folder(train_cfg["output_dir"], f"train.output_dir {train_cfg['output_dir']}")
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    # accelerate keeps its settings in process-wide singletons; a trainer run after another one in
    # the same process (tests, notebooks, chained stages) must get its own precision/accumulation.
    # The process group (PartialState) is kept.
    AcceleratorState._reset_state()
    GradientState._reset_state()

    # Without a GPU, accelerate forms a multi-process group (gloo) only when told it runs on the
    # CPU; so `accelerate launch --multi_gpu --num_processes N` gives CPU DDP on a CPU-only machine.
    accelerator = Accelerator(cpu=bool(train_cfg["cpu"]) or not torch.cuda.is_available(),
                       mixed_precision=train_cfg["mixed_precision"],
                       gradient_accumulation_steps=train_cfg["gradient_accumulation_steps"],
                       project_config=ProjectConfiguration(project_dir=train_cfg["output_dir"]),
                       kwargs_handlers=[DistributedDataParallelKwargs(
                           find_unused_parameters=bool(train_cfg["find_unused_parameters"]))])
    accelerator.print(f"distributed mode: {distributed_mode(accelerator)}")
    return accelerator


class TrainState:
    """The loop's own resumable state: step count and data position (epoch, batch)."""

    def __init__(self):
        self.step = 0
        self.data = {"epoch": 0, "batch": 0}
        self.skipped = 0

    def state_dict(self):
        return {"step": self.step, "data": dict(self.data), "skipped": self.skipped}

    def load_state_dict(self, state):
        self.step, self.data, self.skipped = int(state["step"]), dict(state["data"]), int(state["skipped"])


# ---------------------------------------------------------------- checkpoints

def checkpoint_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def complete_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of interrupted saves are ignored)."""
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(CHECKPOINT_PREFIX + r"\d+", p.name)]
    return sorted(found, key=_step_of)


def resolve_resume(resume: str, output_dir) -> Path:
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        if not found:
            raise InputError(f"--resume latest found no complete checkpoint under "
                             f"{checkpoint_dir(output_dir)}; start without --resume or pass a folder.")
        path = found[-1]
    else:
        path = Path(resume)
    if path.is_dir() and not (path / RUN_FILE).is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in (".pkl", ".bin"))
        if pickles:
            raise InputError(f"checkpoint {path} is in the old pickle format ({pickles[0]}), which is never "
                             f"loaded because a pickle can run code; convert it with 'python training/run.py "
                             f"convert-checkpoint {path}' (reads it without running code) and resume again.")
    if not (path / RUN_FILE).is_file():
        raise InputError(f"--resume {resume} is not a complete checkpoint folder (expected "
                         f"{CHECKPOINT_PREFIX}<step> with the saved states); pass one from "
                         f"{checkpoint_dir(output_dir)} or 'latest'.")
    return path


def save_checkpoint(accelerator, output_dir, step: int, keep: int, objects, train_cfg: dict) -> Path:
    """Write the run's state to ``checkpoints/checkpoint-<step>`` (what it holds: training.checkpoint)
    through a temporary folder renamed into place, then drop checkpoints beyond ``keep``."""
    folder = checkpoint_dir(output_dir)
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    temp = folder / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    write_checkpoint(accelerator, temp, objects, {**train_cfg, "step": step})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temp, final)   # the checkpoint becomes visible only when complete
        later, earlier = [], []
        for found in complete_checkpoints(output_dir):
            (later if _step_of(found) > step else earlier).append(found)
        for abandoned in later:  # left by a run this one resumed before: kept, but no longer 'latest'
            os.replace(abandoned, abandoned.with_name("superseded-" + abandoned.name))
        for old in earlier[:-keep] if keep > 0 else []:  # the newest, just written, always stays
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def export_model_folder(model, folder) -> Path:
    """A model as released (``diffusion_pytorch_model.safetensors`` + ``config.json``), loadable
    by the core's loaders and the nodes."""
    from easyanimate_core.checkpoints import save_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_state_dict(folder / "diffusion_pytorch_model.safetensors", state)  # atomic
    write_json(folder / "config.json", model.config)
    return folder


def write_json(path, data) -> None:
    """Written to a temporary file and renamed, so a kill never leaves half a config."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)


# ---------------------------------------------------------------- gradient clipping

def fused_adam(parameters) -> bool:
    """Whether Adam / AdamW can take its fused kernel (one call updates every tensor) for these
    parameters. The per-tensor loop it replaces is a fixed cost per tensor that a small model
    feels: on one CPU core the demo DiT's AdamW update takes ~3 ms fused against ~17 ms, and a
    whole demo DiT / VAE training step runs 1.09x / 1.06x faster (bench/bench_optimizer.py)."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters)


def clip_gradients(accelerator, parameters, step: int, max_grad_norm: float, warmup_steps: int = 1000,
                   initial_ratio: float = 5.0):
    """The v3 reference's adaptive clipping. The threshold starts at ``initial_ratio x
    max_grad_norm`` and decays linearly to ``max_grad_norm`` over ``warmup_steps``; afterwards a
    gradient more than 5x over the threshold is clipped harder, to ``threshold / min(ratio, 10)``,
    so one abnormal batch cannot throw the weights far (from the step after the warm-up, as the
    reference). Returns the total norm before clipping."""
    parameters = [p for p in parameters if p.grad is not None]
    if max_grad_norm <= 0 or not parameters:
        return None
    total = accelerator.clip_grad_norm_(parameters, float("inf"))
    if total is None:  # DeepSpeed clips inside its engine (gradient_clipping in its json)
        return None
    total = float(total)
    if step < warmup_steps:
        threshold = max_grad_norm * (initial_ratio - (initial_ratio - 1.0) * step / warmup_steps)
    else:
        threshold = max_grad_norm
        ratio = total / threshold
        if ratio > 5.0 and step > warmup_steps:
            threshold = threshold / min(ratio, 10.0)
    if math.isfinite(total) and total > threshold:
        scale = threshold / (total + 1e-6)
        for p in parameters:
            p.grad.mul_(scale)
    return total


# ---------------------------------------------------------------- logging

class LossLog:
    """TensorBoard scalars + ``losses.csv`` (step, name, value) + ``loss_curve.png`` at the end.
    On resume, rows past the resumed step are dropped so the CSV reads like one run."""

    def __init__(self, output_dir, enabled: bool, start_step: int):
        self.enabled = enabled
        self.path = Path(output_dir) / "losses.csv"
        self.png = Path(output_dir) / "loss_curve.png"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if self.path.is_file():
            with self.path.open() as f:
                rows = [r for r in csv.reader(f)][1:]
        temporary = self.path.with_name(self.path.name + ".tmp")  # a kill here keeps the old log whole
        with temporary.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["step", "name", "value"])
            out.writerows(r for r in rows if int(r[0]) <= start_step)
        os.replace(temporary, self.path)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"), purge_step=start_step + 1)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a", newline="") as f:
            out = csv.writer(f)
            for name, value in values.items():
                out.writerow([step, name, f"{value:.6g}"])
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> None:
        if self.enabled:
            plot_losses(self.path, self.png)


def plot_losses(csv_path, png_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, tuple[list, list]] = {}
    with open(csv_path) as f:
        for row in list(csv.reader(f))[1:]:
            steps, values = series.setdefault(row[1], ([], []))
            steps.append(int(row[0]))
            values.append(float(row[2]))
    if not series:
        return
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.2 * len(series)), squeeze=False)
    for ax, (name, (steps, values)) in zip(axes[:, 0], sorted(series.items())):
        ax.plot(steps, values, linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- the loop

def weights_digest(models) -> bytes:
    import hashlib

    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.digest()


def check_ranks_agree(accelerator, models) -> None:
    """Distributed runs end by comparing a SHA-256 of every rank's parameters (batch-norm running
    statistics are per-rank by nature and left out): data-parallel ranks
    must hold identical models, and a silent divergence (a module outside DDP, a rank-dependent
    branch) would otherwise only show as a worse model."""
    mine = torch.tensor(list(weights_digest([accelerator.unwrap_model(m) for m in models])), dtype=torch.int64,
                        device=accelerator.device)
    every = accelerator.gather(mine[None]).view(accelerator.num_processes, -1)
    if not bool((every == every[0]).all()):
        raise RuntimeError("the training processes ended with different weights; data-parallel ranks must "
                           "stay identical (report this as a bug with the config used).")
    accelerator.print(f"weights identical on all {accelerator.num_processes} processes "
                      f"(sha256 {bytes(every[0].tolist()).hex()[:16]})")


def train(accelerator, cfg: dict, stream, step_fn, checkpoint_objects=(), export=None, validate=None,
          resume: str | None = None, models=()) -> TrainState:
    """Run ``step_fn`` until ``cfg['steps']`` steps are done (resuming first when asked), then
    call ``export()`` on the main process. ``checkpoint_objects`` are extra objects with
    ``state_dict``/``load_state_dict`` (EMA, ...) saved in every checkpoint; ``models`` are the
    trained models whose weights must agree across processes at the end."""
    from tqdm.auto import tqdm

    output_dir = Path(cfg["output_dir"])
    accumulate = cfg.get("gradient_accumulation_steps", 1)
    if cfg["checkpoint_every"] % accumulate:
        raise InputError(f"train.checkpoint_every {cfg['checkpoint_every']} is not a multiple of "
                         f"train.gradient_accumulation_steps {accumulate}: a checkpoint there would drop the "
                         f"gradients gathered so far; use a multiple")
    state = TrainState()
    objects = [state, *checkpoint_objects]
    if resume:
        path = resolve_resume(resume, output_dir)
        read_checkpoint(accelerator, path, objects, cfg)
        stream.load_state_dict(state.data)
        accelerator.print(f"resumed from {path} at step {state.step}")
    log = LossLog(output_dir, accelerator.is_main_process, state.step)
    bar = tqdm(total=cfg["steps"], initial=state.step, disable=not accelerator.is_main_process,
               desc="train", dynamic_ncols=True)
    rank = accelerator.process_index
    started = time.perf_counter()
    batches = iter(stream)
    try:
        while state.step < cfg["steps"]:
            batch = next(batches)
            step = state.step
            torch.manual_seed(int(seeded_generator(cfg["seed"], "global", step, rank).initial_seed()))
            values = step_fn(batch, step, seeded_generator(cfg["seed"], "step", step, rank))
            state.step += 1
            state.data = stream.state_dict()
            state.skipped += int(batch.get("skipped", 0))
            if state.step % cfg["log_every"] == 0 or state.step == cfg["steps"]:
                # one tensor, one all-reduce and one device sync for all the step's values
                stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32).to(accelerator.device)
                                       for v in values.values()])
                values = dict(zip(values, accelerator.reduce(stacked, "mean").tolist()))
                log.log(state.step, values)
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:3]})
            bar.update(1)
            if (cfg["checkpoint_every"] and state.step % cfg["checkpoint_every"] == 0) or state.step == cfg["steps"]:
                save_checkpoint(accelerator, output_dir, state.step, cfg["checkpoints_keep"], objects, cfg)
            if validate is not None and cfg["validation_every"] and state.step % cfg["validation_every"] == 0:
                if accelerator.is_main_process:
                    validate(state.step)
                accelerator.wait_for_everyone()
    finally:  # also on an error or interrupt: no open event file, progress bar or loader workers left
        bar.close()
        batches.close()
        log.close()
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        check_ranks_agree(accelerator, models)
    if export is not None and accelerator.is_main_process:
        export()
    log.finish()
    if state.skipped:
        accelerator.print(f"{state.skipped} unreadable samples were skipped (replaced by readable ones)")
    accelerator.print(f"done: {state.step} steps in {time.perf_counter() - started:.1f} s, "
                      f"outputs in {output_dir}")
    accelerator.wait_for_everyone()
    return state


def lr_schedule(optimizer, kind: str, warmup_steps: int, total_steps: int):
    """``constant`` / ``constant_with_warmup`` (linear warm-up, the reference DiT schedule) /
    ``cosine`` (warm-up then cosine to zero)."""
    def factor(step):
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if kind in ("constant", "constant_with_warmup"):
            return warm if kind == "constant_with_warmup" else 1.0
        if kind == "cosine":
            progress = max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        raise InputError(f"train.lr_schedule {kind!r} is not one of constant, constant_with_warmup, cosine; "
                         f"pick one of those.")
    factor(0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
