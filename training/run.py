"""The headless toolkit: ``python training/run.py <command> [options]``.

Each command lives in its own module with ``main(command, argv) -> exit code``; modules load only
when their command runs, so ``--help`` is instant. Errors the user can fix (bad files, bad
options) print as one line instead of a traceback.
"""

import sys
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMMANDS = {
    "generate": ("training.generate", "generate a video (or image) from a prompt"),
    "preprocess": ("training.preprocess.cli", "data preprocessing: split, filters, captions, metadata"),
    "vae": ("training.train_vae", "VAE stage 1: train the whole slice VAE"),
    "vae-decoder": ("training.train_vae", "VAE stage 2: train the decoder only"),
    "dit-image": ("training.train_dit", "DiT stage 1: align an image DiT to a VAE on images"),
    "dit-motion": ("training.train_dit", "DiT stage 2: train motion modules on video + images"),
    "dit-full": ("training.train_dit", "DiT stage 3: train the whole video DiT"),
    "lora": ("training.train_lora", "train a LoRA on the DiT"),
    "motion-lora": ("training.train_lora", "train a MotionLoRA on motion-module attention"),
    "domain-adapter": ("training.train_lora", "train a domain adapter on image attention"),
    "demo-train": ("training.demo.chain", "reproduce the embedded default model end to end"),
    "demo-eval": ("training.demo.evaluate", "score a model folder on held-out prompts of the demo world"),
    "inspect": ("easyanimate_core.checkpoints.cli", "say what a checkpoint file or folder is"),
    "convert-checkpoint": ("training.checkpoint", "rewrite an old pickle-format training checkpoint safely"),
    "split-motion-module": ("easyanimate_core.checkpoints.split", "split a video DiT into image base + motion module"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: python training/run.py <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "python training/run.py <command> --help  shows a command's options"]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; run 'python training/run.py --help' for the list",
              file=sys.stderr)
        return 2
    from easyanimate_core.errors import EasyAnimateError

    module = import_module(COMMANDS[command][0])
    try:
        return int(module.main(command, rest) or 0)
    except EasyAnimateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
