"""Reading and writing weights: safetensors, diffusers-style folders, and weights-only torch files.

Nothing here ever runs arbitrary pickle code: `.pt/.pth/.ckpt/.bin` go through
`torch.load(weights_only=True)`, which refuses any object that is not a tensor or plain container.
`device="meta"` reads only names, shapes and dtypes (a safetensors header is a few kB), so a 7 GB
transformer can be identified without reading its weights.
"""

import json
import os
import re
import struct
from pathlib import Path

import torch

from ..errors import CheckpointError, InputError

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
SHARD_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
# safetensors metadata entry in which a loose weights file carries its model config (JSON)
CONFIG_METADATA_KEY = "config"
# Wrappers that training frameworks put around a state dict (Lightning, DeepSpeed, plain dicts).
WRAPPER_KEYS = ("state_dict", "module")

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def weights_file(path, subfolder=None) -> Path:
    """The single weights file that `path` names: the file itself, or the weights inside a
    diffusers-style model folder (optionally its `subfolder`, e.g. "transformer" or "vae")."""
    path = Path(path)
    if subfolder:
        path = path / subfolder
    if not path.exists():
        raise CheckpointError(
            f"{path} does not exist; check the path (expected a weights file "
            f"or a model folder with config.json)."
        )
    if path.is_file():
        return path
    for name in WEIGHTS_NAMES + (SHARD_INDEX_NAME,):
        if (path / name).is_file():
            return path / name
    parts = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name in ("transformer", "vae"))
    if parts:
        raise CheckpointError(
            f"{path} is a model folder with the parts {', '.join(parts)}; say which "
            f"one to read (subfolder='{parts[0]}')."
        )
    raise CheckpointError(
        f"{path} holds no weights: expected {WEIGHTS_NAMES[0]} or {WEIGHTS_NAMES[1]} "
        f"next to config.json; copy the model's weights into the folder."
    )


def transformers_weight_files(folder) -> list[Path]:
    """The weights files of a transformers model folder, as ``from_pretrained`` picks them:
    ``model.safetensors`` (or its shards) when present, else ``pytorch_model*.bin``: the files the
    pack checks must be the ones transformers then reads, whatever else lies in the folder."""
    folder = Path(folder)
    return sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def load_config(path, subfolder=None) -> dict | None:
    """The config that travels with the weights: the config.json of a model folder (or of the
    folder holding a diffusers weights file), else, for a loose safetensors file, the JSON object
    in its ``config`` metadata entry (how the pack's own exports carry it). None when there is none."""
    path = Path(path)
    if subfolder:
        path = path / subfolder
    folder = path if path.is_dir() else path.parent
    if path.is_file() and not path.name.startswith("diffusion_pytorch_model"):
        # a loose file does not own the config.json that happens to sit beside it
        return _metadata_config(path) if path.suffix.lower() in SAFETENSORS_SUFFIXES else None
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"{config_file} is not valid JSON ({error}); restore the file from the model download."
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_file} holds a {type(config).__name__}, expected a JSON object.")
    return config


def _metadata_config(file) -> dict | None:
    text = (read_safetensors_header(file).get("__metadata__") or {}).get(CONFIG_METADATA_KEY)
    if text is None:
        return None
    try:
        config = json.loads(text)
    except ValueError as error:
        raise CheckpointError(
            f"{file} has a '{CONFIG_METADATA_KEY}' metadata entry that is not JSON ({error}); "
            f"re-export the file, or give the config another way (a preset or a config.json)."
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{file} has a '{CONFIG_METADATA_KEY}' metadata entry holding a {type(config).__name__}, "
            f"expected a JSON object; re-export the file."
        )
    return config


def load_state_dict(path, subfolder=None, device="cpu", keys=None) -> dict[str, torch.Tensor]:
    """The tensors of a weights file or model folder (only those named in `keys`, if given);
    `device="meta"` reads names, shapes and dtypes only."""
    file = weights_file(path, subfolder)
    keys = None if keys is None else set(keys)
    if file.name == SHARD_INDEX_NAME:
        return _load_shards(file, device, keys)
    suffix = file.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return _load_safetensors(file, device, keys)
    if suffix in PICKLE_SUFFIXES:
        return _load_weights_only_pickle(file, device, keys)
    raise CheckpointError(
        f"{file} has the unknown extension '{suffix}'; expected one of "
        f"{', '.join(SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)}."
    )


def _load_shards(index_file, device, keys):
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(
            f"{index_file} is not a valid shard index (expected a JSON object "
            f"with a 'weight_map'); restore it from the model download."
        ) from None
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        state_dict.update(_load_safetensors(index_file.parent / shard, device, keys))
    return state_dict


def read_safetensors_header(file) -> dict:
    """The JSON header of a safetensors file, checked against the file size so that a truncated
    download is reported before any tensor is read."""
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _corrupt(file, "it is shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8 or header_len > 100_000_000:
            raise _corrupt(file, "its header length does not fit the file")
        try:
            header = json.loads(handle.read(header_len))
        except (ValueError, UnicodeDecodeError):
            raise _corrupt(file, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(file, "its header is not a JSON object")
    data_end = max(
        (
            entry["data_offsets"][1]
            for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
        ),
        default=0,
    )
    if 8 + header_len + data_end > size:
        raise _corrupt(
            file, f"it is truncated ({size} bytes, the header promises {8 + header_len + data_end})"
        )
    return header


def _load_safetensors(file, device, keys):
    header = read_safetensors_header(file)
    if device == "meta" or str(device) == "meta":
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__" or (keys is not None and name not in keys):
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise _corrupt(file, f"tensor {name!r} has the unsupported dtype {entry.get('dtype')!r}")
            tensors[name] = torch.empty(entry["shape"], dtype=dtype, device="meta")
        return tensors
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt", device=str(device)) as handle:
            names = [name for name in handle.keys() if keys is None or name in keys]  # noqa: SIM118
            return {name: handle.get_tensor(name) for name in names}
    except Exception as error:  # noqa: BLE001 - the safetensors library raises its own error types
        raise _corrupt(file, f"safetensors could not read it ({' '.join(str(error).split())})") from None


# How torch's weights-only unpickler words a refusal; the wording changes between releases
# ("Unsupported global: GLOBAL x.y", "unsupported GLOBAL x.y whose module x is blocked").
_REFUSED_GLOBAL = re.compile(r"unsupported global:?\s+(?:global\s+)?([\w.]+)", re.IGNORECASE)
_REFUSED_PICKLE = re.compile(r"unsupported (?:global|operand)|is blocked|not an allowed global", re.IGNORECASE)


def _torch_load(file):
    # Memory-mapped, so reading a few tensors (or only shapes) of a large file stays cheap; the
    # pre-zip torch.save format cannot be mapped and is read whole.
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
    return torch.load(file, map_location="cpu", weights_only=True)


def _load_weights_only_pickle(file, device, keys):
    try:
        loaded = _torch_load(file)
    except Exception as error:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, KeyError...
        found = _REFUSED_GLOBAL.search(str(error))
        if found or _REFUSED_PICKLE.search(str(error)):
            what = found.group(1) if found else "a Python object"
            raise CheckpointError(
                f"{file} is a pickle that is not weights-only (it contains {what}); "
                f"only plain tensors are loaded, never arbitrary pickle: convert it to "
                f".safetensors with the tool that made it."
            ) from None
        raise _corrupt(
            file, f"torch could not read it as a weights-only file ({type(error).__name__})"
        ) from None
    state_dict = unwrap_state_dict(loaded, file)
    if keys is not None:
        state_dict = {name: t for name, t in state_dict.items() if name in keys}
    if device == "meta" or str(device) == "meta":
        return {name: torch.empty(t.shape, dtype=t.dtype, device="meta") for name, t in state_dict.items()}
    return {name: t.to(device) for name, t in state_dict.items()}


def check_finite(tensors: dict, source="the checkpoint") -> None:
    """Raise :class:`CheckpointError` when a floating-point tensor holds NaN or inf: such weights
    load silently and then turn every output into NaN. One min/max pass per tensor (NaN
    propagates through both, inf shows in one), exact and without a copy; fp8 has no such
    kernel and is widened to fp16 (which holds every fp8 value) tensor by tensor."""
    bad = [name for name, tensor in tensors.items() if tensor.device.type != "meta" and not _finite(tensor)]
    if bad:
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{source} holds NaN or infinite values (in {bad[0]}{more}); the file is damaged or was saved "
            f"from a diverged training run: download it again or use an earlier checkpoint."
        )


def _finite(tensor: torch.Tensor) -> bool:
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if tensor.element_size() == 1:
        tensor = tensor.to(torch.float16)
    low, high = torch.aminmax(tensor)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def unwrap_state_dict(loaded, source="the checkpoint") -> dict[str, torch.Tensor]:
    """Strip {"state_dict": ...} / {"module": ...} wrappers and check that what is left maps names
    to tensors."""
    while isinstance(loaded, dict):
        wrapper = next((key for key in WRAPPER_KEYS if isinstance(loaded.get(key), dict)), None)
        if wrapper is None:
            break
        loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(
            f"{source} holds {type(loaded).__name__ if loaded else 'nothing'}, "
            f"expected a mapping of parameter names to tensors."
        )
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{source} maps {not_tensors[0]!r} to a "
            f"{type(loaded[not_tensors[0]]).__name__}, expected only tensors "
            f"(is it a full training checkpoint? export the model weights)."
        )
    return loaded


def _corrupt(file, why):
    return CheckpointError(f"{file} is truncated or corrupt: {why}; download or copy it again.")


def save_state_dict(path, tensors: dict, metadata: dict | None = None) -> None:
    """Write `tensors` to a safetensors file atomically: a temp file in the same folder is
    written, fsynced and renamed over `path`, so a crash never leaves a half-written file."""
    from safetensors.torch import save_file

    path = Path(path)
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InputError(
            f"metadata for {path} must map str to str; convert the values with str() or json.dumps() first."
        )
    if not path.parent.is_dir():
        raise InputError(f"cannot save {path}: the folder {path.parent} does not exist; create it first.")
    prepared = _standalone_tensors(tensors, path)
    temp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        save_file(prepared, str(temp), metadata=metadata)
        with open(temp, "rb+") as handle:
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _standalone_tensors(tensors, path):
    """Contiguous CPU tensors that each own their storage (safetensors refuses shared memory, and
    views such as a split qkv weight would otherwise drag the whole parent along)."""
    owners = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"cannot save {path}: {name!r} is a {type(tensor).__name__}, not a tensor.")
        if tensor.device.type == "meta":
            raise InputError(f"cannot save {path}: {name!r} is on the meta device (it has no values).")
        owners.setdefault(tensor.untyped_storage().data_ptr(), []).append(name)
    prepared = {}
    for name, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        shared = len(owners[tensors[name].untyped_storage().data_ptr()]) > 1
        partial = tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
        prepared[name] = (
            tensor.clone(memory_format=torch.contiguous_format) if shared or partial else tensor.contiguous()
        )
    return prepared


def _fsync_folder(folder):
    # Makes the rename itself durable; not possible on every OS (Windows), where it is skipped.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
