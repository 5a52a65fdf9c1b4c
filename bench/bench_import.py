"""Time the pack adds to ComfyUI's startup: importing it by file path (as ComfyUI does) in a fresh
interpreter that has already imported torch (the host adapter included, since every node
module uses it). Prints the median over several runs.

    python bench/bench_import.py [--runs 7]

Target: under 200 ms, i.e. no transformers / diffusers / cv2 / accelerate at import time."""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("transformers", "diffusers", "cv2", "scenedetect", "accelerate")

CHILD = r"""
import importlib.util, json, sys, time
import torch
torch.set_num_threads(1)
root = sys.argv[1]
before = set(sys.modules)
start = time.perf_counter()
name = root.replace(".", "_x_")                      # ComfyUI's module name for a pack folder
spec = importlib.util.spec_from_file_location(name, root + "/__init__.py")
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
importlib.import_module(name + ".nodes.host")         # every node module imports it
seconds = time.perf_counter() - start
new = set(sys.modules) - before
print(json.dumps({"seconds": seconds, "nodes": len(module.NODE_CLASS_MAPPINGS), "new_modules": len(new),
                  "heavy": sorted(m for m in new if m.split(".")[0] in json.loads(sys.argv[2]))}))
"""


def measure(runs: int) -> list[dict]:
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), json.dumps(HEAVY)],
                             capture_output=True, text=True, check=True, cwd="/")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    results = measure(args.runs)
    times_ms = sorted(r["seconds"] * 1000 for r in results)
    last = results[-1]
    print(f"pack import after torch: median {statistics.median(times_ms):.1f} ms "
          f"(min {times_ms[0]:.1f}, max {times_ms[-1]:.1f}, {args.runs} fresh interpreters; target < 200 ms)")
    print(f"nodes registered: {last['nodes']}; modules added: {last['new_modules']}; "
          f"heavy modules imported: {last['heavy'] or 'none'}")


if __name__ == "__main__":
    main()
