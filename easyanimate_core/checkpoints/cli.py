"""`python training/run.py inspect <path>`: say what a weights file or model folder is."""

import argparse
import json
from pathlib import Path

MODEL_PARTS = ("transformer", "vae")


def main(command: str, argv: list[str]) -> int:
    from .detect import inspect_checkpoint

    parser = argparse.ArgumentParser(
        prog=f"run.py {command}",
        description="Identify a checkpoint: family, version, key config, notes. Reads names and shapes only.",
    )
    parser.add_argument("path", help="a .safetensors / .pt / .pth / .ckpt / .bin file or a model folder")
    parser.add_argument(
        "--subfolder", default=None, help="part of a model folder to read, e.g. transformer or vae"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    path = Path(args.path)
    # A whole model folder (transformer/ + vae/ + ...): report every part it has.
    parts = [args.subfolder]
    if args.subfolder is None and path.is_dir() and not (path / "config.json").is_file():
        parts = [part for part in MODEL_PARTS if (path / part).is_dir()] or [None]
    reports = [inspect_checkpoint(path, subfolder=part) for part in parts]
    if args.json:
        print(
            json.dumps(
                [_as_dict(info) for info in reports] if len(reports) > 1 else _as_dict(reports[0]), indent=2
            )
        )
    else:
        print("\n\n".join(info.report() for info in reports))
    return 0


def _as_dict(info):
    return {
        "source": info.source,
        "family": info.family,
        "version": info.version,
        "num_tensors": info.num_tensors,
        "config": info.config,
        "notes": info.notes,
        "dropped_keys": len(info.dropped_keys),
    }
