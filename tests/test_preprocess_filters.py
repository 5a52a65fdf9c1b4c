"""Motion, text and aesthetic scores on synthetic clips and frames."""


import numpy as np
import pytest
import torch
from synthetic_videos import pan_frames, text_frame_set, write_text_clip

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import write_video
from training.preprocess import aesthetic, motion, text_score

SIZE = (96, 128)


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
    # sampled at 2 fps from 10 fps: 5 frames apart, so the true magnitude is 5 x speed
    assert scores["static"] < 0.1
    assert scores["medium"] == pytest.approx(5.0, abs=0.3)
    assert scores["fast"] == pytest.approx(7.5, abs=0.4)


def test_motion_band_drops_static_and_fast(pans):
    flow = motion.farneback_flow
    kept = motion.score_clip({"file_path": "medium.mp4"}, pans, flow, low=3, high=6)
    assert "drop" not in kept and kept["motion_score"] > 3
    assert motion.score_clip({"file_path": "static.mp4"}, pans, flow, 3, 6)["drop"] == "motion_low"
    assert motion.score_clip({"file_path": "fast.mp4"}, pans, flow, 3, 6)["drop"] == "motion_high"


class ConstantFlow(torch.nn.Module):
    """Stands in for RAFT: flow (3, 4) everywhere, returned as a list of refinements."""

    def forward(self, image1, image2):
        flow = torch.zeros(image1.shape[0], 2, image1.shape[2], image1.shape[3])
        flow[:, 0], flow[:, 1] = 3.0, 4.0
        return [flow * 0.5, flow]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_and_exported_flow_models_plug_in(pans, tmp_path):
    torch.jit.save(torch.jit.script(ConstantFlow()), str(tmp_path / "flow.pt"))
    example = (torch.zeros(1, 3, *SIZE), torch.zeros(1, 3, *SIZE))
    torch.export.save(torch.export.export(ConstantFlow(), example), str(tmp_path / "flow.pt2"))
    for name in ("flow.pt", "flow.pt2"):
        flow = motion.make_flow("raft", str(tmp_path / name))
        assert motion.motion_score(pans / "slow.mp4", flow) == pytest.approx(5.0)  # |(3, 4)|, last refinement


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_flow_model_errors(tmp_path):
    with pytest.raises(CheckpointError, match="needs --flow-weights"):
        motion.make_flow("raft", None)
    with pytest.raises(CheckpointError, match="does not exist"):
        motion.make_flow("raft", str(tmp_path / "none.pt"))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        motion.make_flow("torch", str(tmp_path / "bad.pt"))
    with pytest.raises(CheckpointError, match="unknown flow"):
        motion.make_flow("lucas", None)


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
