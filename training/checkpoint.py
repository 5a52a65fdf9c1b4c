"""What a training checkpoint folder holds, written and read without pickle.

    model.safetensors, model_1.safetensors ...   the prepared models' weights (main process)
    optimizer_<i>.safetensors/.json              each prepared optimizer's state (main process)
    state_<i>.safetensors/.json                  the loop's counters and data position (0), then
                                                 the trainer's objects: scheduler, EMA, ... (main)
    grad_scaler.json/.safetensors                fp16 loss scaling, when it runs
    rng_<rank>.safetensors/.json                 every process's torch / numpy / python RNG
    run.json                                     the step and the train options (written last)

accelerate's ``save_state`` / ``load_state`` are not used: they write optimizer, scheduler, RNG
and custom states as pickles and load them with ``weights_only=False``, so a crafted file in a
checkpoint folder would run code on ``--resume``. Everything here goes through
:mod:`training.state_files` (safetensors + JSON); :func:`convert_pickle_checkpoint` turns an
old-format folder into this one with ``torch.load(weights_only=True)``, which refuses anything
but tensors and plain containers.
"""

from __future__ import annotations

import json
import re
import random
from pathlib import Path

import numpy as np
import torch

from easyanimate_core.errors import InputError
from training.state_files import load_state, save_state

RUN_FILE = "run.json"
# train options a resume cannot change: the optimizer and EMA come back with the checkpoint's values
FIXED_ON_RESUME = ("lr", "low_lr_factor", "betas", "weight_decay", "adam_eps", "ema_decay")


def model_file(index: int) -> str:
    return "model.safetensors" if index == 0 else f"model_{index}.safetensors"


def uses_deepspeed(accelerator) -> bool:
    return getattr(accelerator.state, "deepspeed_plugin", None) is not None


def rng_state() -> dict:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(accelerator, folder: Path, objects, train_cfg: dict) -> None:
    """Called on every process (a sharded model gathers its weights through all of them)."""
    from easyanimate_core.checkpoints import save_state_dict

    folder = Path(folder)
    weights = [accelerator.get_state_dict(model) for model in accelerator._models]
    if accelerator.is_main_process:
        for index, state in enumerate(weights):
            save_state_dict(folder / model_file(index), {k: v.detach().cpu() for k, v in state.items()})
        if not uses_deepspeed(accelerator):  # DeepSpeed's optimizer holds objects: see read_checkpoint
            for index, optimizer in enumerate(accelerator._optimizers):
                save_state(optimizer.state_dict(), folder / f"optimizer_{index}")
        for index, obj in enumerate(objects):
            save_state(obj.state_dict(), folder / f"state_{index}")
        if accelerator.scaler is not None:
            save_state(accelerator.scaler.state_dict(), folder / "grad_scaler")
    save_state(rng_state(), folder / f"rng_{accelerator.process_index}")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        temporary = folder / (RUN_FILE + ".tmp")
        # accelerator.step: where gradient accumulation stands, so a resumed run steps its
        # optimizer on the same batches as an uninterrupted one
        temporary.write_text(json.dumps({**train_cfg, "deepspeed": uses_deepspeed(accelerator),
                                         "accumulation_step": accelerator.step}, default=str))
        temporary.replace(folder / RUN_FILE)


def _check_same_model(model, weights: dict, path: Path) -> None:
    """One line when the checkpoint's weights do not fit the model the config builds."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or extra or reshaped:
        example = (f"{reshaped[0]!r} is {list(found[reshaped[0]])} there, {list(expected[reshaped[0]])} here"
                   if reshaped else f"{(missing or extra)[0]!r} is {'missing' if missing else 'unexpected'}")
        raise InputError(f"checkpoint {path} holds a different model than this config builds ({len(missing)} "
                         f"missing, {len(extra)} unexpected, {len(reshaped)} reshaped weights; e.g. {example}); "
                         f"resume with the config that made it or start a new output_dir.")


def _load_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise InputError(f"checkpoint {path.parent} has no {path.name}; resume from another checkpoint or start "
                         f"a new output_dir.")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for a cut or garbled file
        raise InputError(f"checkpoint file {path} is damaged ({str(error).splitlines()[0]}); resume from an "
                         f"earlier checkpoint or start a new output_dir.") from error


def match_parameter_layout(optimizer) -> None:
    """safetensors stores tensors contiguous; a channels-last parameter's moments must come back
    with its strides, as the uninterrupted run has them (the fused Adam kernel walks parameter and
    state memory in the same order, so a layout mismatch changes the update, not just its speed)."""
    for parameter, state in optimizer.state.items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                state[key] = torch.empty_like(parameter, dtype=value.dtype).copy_(value)


def read_checkpoint(accelerator, folder: Path, objects, train_cfg: dict) -> None:
    """Restore what :func:`write_checkpoint` wrote, checking every file before it is used."""
    folder = Path(folder)
    saved = json.loads((folder / RUN_FILE).read_text())
    if saved.get("deepspeed") or uses_deepspeed(accelerator):
        raise InputError(f"checkpoint {folder}: resuming a DeepSpeed run is not supported (its partitioned "
                         f"optimizer state exists only in DeepSpeed's pickle format, which is never loaded); "
                         f"start from the checkpoint's weights (model.pretrained) in a new output_dir.")
    for index, model in enumerate(accelerator._models):
        weights = _load_weights(folder / model_file(index))
        plain = accelerator.unwrap_model(model)
        _check_same_model(plain, weights, folder)
        plain.load_state_dict(weights)
    for index, optimizer in enumerate(accelerator._optimizers):
        state = load_state(folder / f"optimizer_{index}", "optimizer state")
        try:
            optimizer.load_state_dict(state)
        except (ValueError, KeyError) as error:
            raise InputError(f"checkpoint {folder}: the optimizer state does not fit this run's trainable "
                             f"parameters ({error}); resume with the config that made it.") from error
        match_parameter_layout(optimizer)
    for index, obj in enumerate(objects):
        obj.load_state_dict(load_state(folder / f"state_{index}", f"{type(obj).__name__} state"))
    if accelerator.scaler is not None:  # fp16: the loss scale the run had reached
        accelerator.scaler.load_state_dict(load_state(folder / "grad_scaler", "fp16 loss scale"))
    accelerator.step = int(saved.get("accumulation_step", 0))
    rng = folder / f"rng_{accelerator.process_index}.json"
    if rng.is_file():
        set_rng_state(load_state(rng.with_suffix(""), "random state"))
    for key in FIXED_ON_RESUME:
        if key in saved and key in train_cfg and saved[key] != train_cfg[key]:
            accelerator.print(f"note: train.{key} is {train_cfg[key]!r} but the checkpoint ran with {saved[key]!r}; "
                              f"a resumed run keeps the checkpoint's optimizer state, so the new value is "
                              f"ignored (start a new output_dir to use it)")


def convert_pickle_checkpoint(folder) -> Path:
    """Rewrite an old accelerate-format checkpoint (``optimizer.bin``, ``custom_checkpoint_<i>.pkl``)
    in this format, in place. Files are read with ``torch.load(weights_only=True)``, which loads
    tensors and plain containers and refuses any other object, so a crafted file stops the
    conversion instead of running. RNG pickles hold numpy objects and are dropped: the loop
    re-seeds every step from (seed, step, rank)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a checkpoint folder; pass an old checkpoint-<step> folder.")
    if (folder / RUN_FILE).is_file():
        raise InputError(f"{folder} is already in the safetensors + JSON format; resume from it as it is.")
    customs = sorted((p for p in folder.glob("custom_checkpoint_*.pkl") if re.fullmatch(r"custom_checkpoint_\d+", p.stem)),
                     key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    if not customs:
        raise InputError(f"{folder} has no custom_checkpoint_0.pkl; it is not an old-format training checkpoint.")

    def read(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle.UnpicklingError for a forbidden object, others for damage
            lines = str(error).splitlines() or [type(error).__name__]
            # torch's text goes on to suggest weights_only=False; only the object it refused is relevant
            detail = next((line.strip() for line in lines if "Unsupported" in line), lines[0]).split(". ")[0]
            raise InputError(f"{path} cannot be read safely ({detail}); it holds more than tensors and plain "
                             f"values, so it is not converted: start a new output_dir.") from error

    if not list(folder.glob("model*.safetensors")):
        raise InputError(f"{folder} has no model*.safetensors weights (an old pytorch_model.bin checkpoint cannot "
                         f"be resumed safely); start a new output_dir from its exported weights.")
    step = None
    for path in customs:
        state = read(path)
        index = int(path.stem.rsplit("_", 1)[1])
        if index == 0:
            step = int(state["step"])
        save_state(state, folder / f"state_{index}")
    for path in sorted(folder.glob("optimizer*.bin")):
        index = path.stem.partition("_")[2] or "0"
        save_state(read(path), folder / f"optimizer_{index}")
    temporary = folder / (RUN_FILE + ".tmp")  # run.json marks a complete checkpoint: written last, whole
    temporary.write_text(json.dumps({"step": step, "converted_from": "accelerate pickle files"}))
    temporary.replace(folder / RUN_FILE)
    for path in [*customs, *folder.glob("optimizer*.bin"), *folder.glob("random_states_*.pkl")]:
        path.unlink()
    return folder


def main(command: str, argv) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=f"run.py {command}", description=(
        "Rewrite old pickle-format training checkpoints (optimizer.bin, custom_checkpoint_<i>.pkl) as "
        "safetensors + JSON, reading them with torch.load(weights_only=True), which never runs code."))
    parser.add_argument("folders", nargs="+", metavar="CHECKPOINT", help="checkpoint-<step> folder(s) to convert")
    for folder in parser.parse_args(list(argv)).folders:
        print(f"converted {convert_pickle_checkpoint(folder)}")
    return 0
