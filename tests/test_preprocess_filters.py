"""Motion, text and aesthetic scores on synthetic clips and frames."""


import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_videos import pan_frames, text_frame_set, write_text_clip

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import write_video
from training.preprocess import aesthetic, motion, text_score

SIZE = (96, 128)
ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- motion

@pytest.fixture(scope="module")
def pans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pans")
    for name, speed in [("static", 0.0), ("slow", 0.2), ("medium", 1.0), ("fast", 1.5)]:
        write_video(folder / f"{name}.mp4", pan_frames(30, *SIZE, speed=speed, seed=5), fps=10)
    return folder


def test_motion_scores_order_and_match_the_true_flow(pans):
    scores = {name: motion.motion_score(pans / f"{name}.mp4") for name in ("static", "slow", "medium", "fast")}
    assert scores["static"] < scores["slow"] < scores["medium"] < scores["fast"]
    # % of the diagonal per second: speed px / frame x 10 fps / 160 px diagonal x 100
    assert scores["static"] < 0.2
    assert scores["medium"] == pytest.approx(6.25, rel=0.1)
    assert scores["fast"] == pytest.approx(9.375, rel=0.1)


def test_motion_score_follows_true_speed_at_any_resolution_and_frame_rate(tmp_path):
    """The same motion (in frame diagonals per second) scores the same at 256x144 and 512x288,
    at 12 and 24 fps, and the score grows with the speed: the 2-fps sampling it replaces read
    1.48, 1.81, 1.35, 1.14, 1.75 for pans of 1.5, 3, 4, 6, 9 px per frame."""
    speeds = [0.0, 3.0, 6.0, 12.0, 24.0, 36.0]  # % of the diagonal per second
    table = {}
    for height, width in ((144, 256), (288, 512)):
        diagonal = float(np.hypot(height, width))
        for fps in (12, 24):
            row = []
            for k, speed in enumerate(speeds):
                path = tmp_path / f"{width}-{fps}-{k}.mp4"
                px_per_frame = speed / 100 * diagonal / fps
                write_video(path, pan_frames(fps * 2, height, width, px_per_frame, seed=3), fps)
                row.append(motion.motion_score(path))
            table[width, fps] = row
            assert row == sorted(row) and len(set(row)) == len(row), (width, fps, row)  # monotone
            assert row[0] < 0.2
            for measured, true in zip(row[1:], speeds[1:]):
                assert measured == pytest.approx(true, rel=0.08), (width, fps, row)
    for k in range(1, len(speeds)):  # independent of resolution and frame rate
        column = [row[k] for row in table.values()]
        assert max(column) / min(column) < 1.08, (speeds[k], column)
    # the defaults keep all of these moving clips and drop the still one
    assert all(motion.MIN_MOTION < score < motion.MAX_MOTION for row in table.values() for score in row[1:])
    assert all(row[0] <= motion.MIN_MOTION for row in table.values())


def test_motion_band_drops_static_and_fast(pans):
    kept = motion.score_clip({"file_path": "medium.mp4"}, pans, low=3, high=8)
    assert "drop" not in kept and kept["motion_score"] > 3
    assert motion.score_clip({"file_path": "static.mp4"}, pans, 3, 8)["drop"] == "motion_low"
    assert motion.score_clip({"file_path": "fast.mp4"}, pans, 3, 8)["drop"] == "motion_high"


def test_a_hostile_flow_model_file_is_refused_without_running_it(pans, tmp_path):
    """--flow-weights used to torch.export.load / torch.jit.load a user file, which can unpickle
    code. The option is gone: a file whose payload would write a marker is never opened."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(WritesMarker(str(marker)))
    pickle.loads(payload)  # the payload works: loading it runs code
    assert marker.exists()
    marker.unlink()
    hostile = tmp_path / "flow.pt2"
    with zipfile.ZipFile(hostile, "w") as archive:  # shaped like a torch archive
        archive.writestr("flow/data.pkl", payload)
        archive.writestr("flow/version", "3\n")
    for option in (["--flow-weights", str(hostile)], ["--flow", "raft", "--flow-weights", str(hostile)]):
        result = subprocess.run([sys.executable, str(ROOT / "training" / "run.py"), "preprocess", "motion", "--input",
                                 str(pans), "--output", str(tmp_path / "motion.jsonl"), *option],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and not marker.exists()
        assert result.stderr.strip().count("\n") == 0 and "was removed" in result.stderr, result.stderr
    assert not (tmp_path / "motion.jsonl").exists()


class WritesMarker:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran"))


# ---------------------------------------------------------------- text

def test_opencv_detector_separates_frames_with_and_without_text():
    detector = text_score.OpenCVTextDetector()
    frames = text_frame_set(60, seed=7)
    flagged = [(detector(frame) > 0.01, has_text) for frame, has_text in frames]
    true_pos = sum(f and t for f, t in flagged)
    false_pos = sum(f and not t for f, t in flagged)
    positives = sum(t for _, t in flagged)
    assert true_pos / positives >= 0.9 and false_pos <= 1


def test_text_area_is_near_the_drawn_text_box():
    import cv2

    frame = np.full((120, 160, 3), 200, np.uint8)
    cv2.putText(frame, "Hello world", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    (w, h), base = cv2.getTextSize("Hello world", cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
    truth = w * (h + base) / (120 * 160)
    assert text_score.OpenCVTextDetector()(frame) == pytest.approx(truth, rel=0.35)


def test_text_stage_flags_clips_with_captions(tmp_path):
    detector = text_score.make_text_detector("opencv")
    write_text_clip(tmp_path / "caption.mp4", True)
    write_text_clip(tmp_path / "clean.mp4", False)
    flagged = text_score.score_clip({"file_path": "caption.mp4"}, tmp_path, detector, 0.01, 3)
    clean = text_score.score_clip({"file_path": "clean.mp4"}, tmp_path, detector, 0.01, 3)
    assert flagged["drop"] == "text" and flagged["text_score"] > 0.01
    assert "drop" not in clean and clean["text_score"] == 0


def test_easyocr_detector_errors_are_actionable(tmp_path):
    with pytest.raises(CheckpointError, match="easyocr"):
        text_score.make_text_detector("easyocr", tmp_path)
    with pytest.raises(CheckpointError, match="unknown text detector"):
        text_score.make_text_detector("tesseract")


# ---------------------------------------------------------------- aesthetic

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = tmp_path_factory.mktemp("clip")
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=768)
    torch.manual_seed(0)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    head = aesthetic.aesthetic_head(768)
    torch.save({f"layers.{k}": v for k, v in head.state_dict().items()}, folder / "head.pth")
    return folder


def test_aesthetic_score_is_the_head_on_normalised_embeddings(tiny_clip, pans):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    scorer = aesthetic.AestheticScorer(tiny_clip, tiny_clip / "head.pth")
    frames = pan_frames(2, *SIZE, speed=1.0, seed=3)
    scores = scorer(frames)
    # independent recomputation from the saved files
    model = CLIPVisionModelWithProjection.from_pretrained(str(tiny_clip)).eval()
    pixels = CLIPImageProcessor.from_pretrained(str(tiny_clip))(images=list(frames), return_tensors="pt")["pixel_values"]
    head = aesthetic.aesthetic_head(768).eval()
    head.load_state_dict({k[len("layers."):]: v for k, v in torch.load(tiny_clip / "head.pth").items()})
    with torch.no_grad():
        embeds = model(pixel_values=pixels).image_embeds
        expected = head(embeds / embeds.norm(dim=-1, keepdim=True))[:, 0]
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)
    record = aesthetic.score_clip({"file_path": "medium.mp4"}, pans, scorer, minimum=scores[0] + 100)
    assert record["drop"] == "aesthetic_low" and isinstance(record["aesthetic_score"], float)


def test_aesthetic_weight_errors(tiny_clip, tmp_path):
    with pytest.raises(CheckpointError, match="has no config.json"):
        aesthetic.AestheticScorer(tmp_path, tiny_clip / "head.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        aesthetic.AestheticScorer(tiny_clip, tmp_path / "none.pth")
    torch.save({"layers.0.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match="does not fit"):
        aesthetic.AestheticScorer(tiny_clip, tmp_path / "wrong.pth")


def test_aesthetic_stage_from_the_cli(tiny_clip, pans, tmp_path):
    from training.preprocess import cli
    from training.preprocess.jobs import read_jsonl

    out = tmp_path / "aesthetic.jsonl"
    assert cli.main("preprocess", ["aesthetic", "--input", str(pans), "--output", str(out), "--clip-model",
                                   str(tiny_clip), "--aesthetic-head", str(tiny_clip / "head.pth"),
                                   "--min-aesthetic", "-1000"]) == 0
    records = read_jsonl(out)
    assert len(records) == 4 and all(isinstance(r["aesthetic_score"], float) and "drop" not in r for r in records)
