"""web/js/vdit_frames.js agrees with the core's frame rule: the counts it accepts are exactly the
ones the slice VAE decodes back unchanged, and its latent-frame label is the VAE's own count.
Runs the module's pure functions under Node.js (skips without ``node``)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tiny_models import build_vae

from easyanimate_core.sampling.shape_rules import valid_frames

SCRIPT = Path(__file__).resolve().parents[1] / "web" / "js" / "vdit_frames.js"
UP_TO = 80

HARNESS = """
import fs from "fs";
// the frontend's app module is not here: a stand-in registry for the one import
const source = fs.readFileSync(process.argv[2], "utf8")
  .replace(/^import \\{ app \\} from .*$/m, "const app = { registerExtension() {} };");
const module = await import("data:text/javascript;base64," + Buffer.from(source).toString("base64"));
const frames = [...Array(UP_TO).keys()].map((i) => i + 1);
console.log(JSON.stringify({
  valid: frames.filter(module.isValidLength),
  latent: frames.filter(module.isValidLength).map(module.latentFrames),
  up: frames.map((f) => module.snapLength(f, f - 1)),
  down: frames.map((f) => module.snapLength(f, f + 1)),
  typed: frames.map((f) => module.snapLength(f)),
}));
""".replace("UP_TO", str(UP_TO))


@pytest.fixture(scope="module")
def js(tmp_path_factory):
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    harness = tmp_path_factory.mktemp("js") / "harness.mjs"
    harness.write_text(HARNESS)
    result = subprocess.run([node, str(harness), str(SCRIPT)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_valid_counts_and_latent_labels_match_the_vae(js):
    vae = build_vae()
    valid = [f for f in range(1, UP_TO + 1) if valid_frames(f, vae)]
    assert js["valid"] == valid
    assert js["latent"] == [vae.latent_frames(f) for f in valid]


def test_snapping_always_lands_on_a_valid_count_in_the_right_direction(js):
    valid = set(js["valid"])
    frames = range(1, UP_TO + 1)
    for f, up, down, typed in zip(frames, js["up"], js["down"], js["typed"]):
        assert {up, typed} <= valid or up > UP_TO
        assert up >= f and (down <= f or f == 1) and down in valid
        nearest = min(valid | {up}, key=lambda v: (abs(v - f), v))
        assert typed == nearest
