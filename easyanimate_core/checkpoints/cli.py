"""`python training/run.py inspect <path>`: say what a weights file or model folder is."""

import argparse
import json


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
    info = inspect_checkpoint(args.path, subfolder=args.subfolder)
    if args.json:
        print(
            json.dumps(
                {
                    "source": info.source,
                    "family": info.family,
                    "version": info.version,
                    "num_tensors": info.num_tensors,
                    "config": info.config,
                    "notes": info.notes,
                    "dropped_keys": len(info.dropped_keys),
                },
                indent=2,
            )
        )
    else:
        print(info.report())
    return 0
