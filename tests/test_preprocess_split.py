
import numpy as np
import pytest
from synthetic_videos import FOOTAGE_FPS, footage_source, write_scenes

from easyanimate_core.errors import InputError
from easyanimate_core.video_io import probe_video, read_video, write_video
from training.preprocess.split import SplitOptions, detect_cuts, list_sources, plan_clips, split_video

FPS = 10.0
SCENES = [45, 120, 25, 60]  # 4.5 s, 12 s (-> 10 s + 2 s rest), 2.5 s, 6 s


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    cuts = write_scenes(folder / "show.mp4", SCENES, fps=FPS, speeds=[1, 0.5, 1, 1.5])
    return folder, cuts


def test_detector_finds_every_hard_cut_within_one_frame(source):
    folder, cuts = source
    found, decoded = detect_cuts(folder / "show.mp4", SplitOptions())
    assert decoded == sum(SCENES) and len(found) == len(cuts)
    assert all(abs(f - c) <= 1 for f, c in zip(found, cuts)), (found, cuts)


def test_fast_textured_motion_adds_no_cut_and_the_spike_check_is_what_prevents_it(tmp_path):
    # 9 px / frame over texture with an object wrapping around the edge keeps the detector's score
    # near its threshold for the whole scene; a cut into and out of it must still be found
    frames, cuts = footage_source(0)  # scenes at 1.5, 0, 9 and 3 px / frame
    write_video(tmp_path / "fast.mp4", frames, FOOTAGE_FPS)
    found, _ = detect_cuts(tmp_path / "fast.mp4", SplitOptions())
    assert len(found) == len(cuts) and all(abs(f - c) <= 1 for f, c in zip(found, cuts)), found
    unchecked, _ = detect_cuts(tmp_path / "fast.mp4", SplitOptions(min_cut_jump=0))
    assert len(unchecked) > len(cuts)  # PySceneDetect's ContentDetector alone cuts inside the fast scene


def test_plan_keeps_3_to_10_second_pieces():
    options = SplitOptions(min_seconds=3, max_seconds=10)
    clips, dropped = plan_clips([45, 165, 190], 250, FPS, options)
    # 45 kept; 120 -> 100 + 20 (rest too short); 25 too short; 60 kept
    assert clips == [(0, 45), (45, 145), (190, 250)]
    assert dropped == [(145, 165, "short"), (165, 190, "short")]
    clips, _ = plan_clips([], 250, FPS, options)  # no cut: one long scene, rest 50 >= 30 kept
    assert clips == [(0, 100), (100, 200), (200, 250)]


def test_split_exports_frame_exact_clips_with_records(source, tmp_path):
    folder, _ = source
    record = split_video(folder, "show.mp4", tmp_path / "clips", SplitOptions())
    spans = [(c["start_frame"], c["end_frame"]) for c in record["clips"]]
    assert len(spans) == 3 and spans[1][1] - spans[1][0] == 100
    original, _ = read_video(folder / "show.mp4")
    for clip in record["clips"]:
        path = tmp_path / "clips" / clip["file_path"]
        info = probe_video(path)
        assert (info.num_frames, info.width, info.height, info.fps) == (
            clip["num_frames"], clip["width"], clip["height"], FPS)
        assert clip["source"] == "show.mp4" and clip["end"] - clip["start"] == pytest.approx(clip["num_frames"] / FPS)
        first, _ = read_video(path, [0])
        # same content as the source frame it starts at (lossy codec: small error only)
        assert np.abs(first[0].astype(float) - original[clip["start_frame"]]).mean() < 4
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == [
        "show-Scene-001.mp4", "show-Scene-002.mp4", "show-Scene-003.mp4"]  # no partial files left


def test_clips_keep_full_colour_resolution_when_asked(source, tmp_path):
    import av

    folder, _ = source
    record = split_video(folder, "show.mp4", tmp_path / "clips", SplitOptions(pix_fmt="yuv444p"))
    with av.open(str(tmp_path / "clips" / record["clips"][0]["file_path"])) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv444p"


def test_options_and_inputs_errors(tmp_path):
    with pytest.raises(InputError, match="--min-cut-jump >= 0"):
        SplitOptions(min_cut_jump=-1)
    with pytest.raises(InputError, match="min <= max"):
        SplitOptions(min_seconds=5, max_seconds=3)
    with pytest.raises(InputError, match="not a folder"):
        list_sources(tmp_path / "nothing")
    (tmp_path / "list.txt").write_text("a.mp4\n\nsub/b.mp4\n")
    assert list_sources(tmp_path / "list.txt") == (tmp_path, ["a.mp4", "sub/b.mp4"])
