import numpy as np
import pytest

from easyanimate_core.errors import InputError
from easyanimate_core.video_io import (
    iter_frames,
    probe_video,
    read_sampled_frames,
    read_video,
    sample_indices,
    write_video,
)


def ramp(num_frames=12, height=48, width=64):
    """Frames whose brightness encodes their index, so order and seeking are checkable."""
    return np.stack([np.full((height, width, 3), 10 + 20 * i, np.uint8) for i in range(num_frames)])


def test_roundtrip_size_fps_count_and_order(tmp_path):
    path = write_video(tmp_path / "a.mp4", ramp(), fps=8)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.num_frames) == (64, 48, 8.0, 12)
    frames, fps = read_video(path)
    assert frames.shape == (12, 48, 64, 3) and frames.dtype == np.uint8 and fps == 8.0
    assert np.abs(frames.mean(axis=(1, 2, 3)) - (10 + 20 * np.arange(12))).max() < 3


def test_read_selected_indices_in_given_order(tmp_path):
    path = write_video(tmp_path / "a.mp4", ramp(), fps=8)
    frames, _ = read_video(path, [7, 2, 7])
    assert np.abs(frames.mean(axis=(1, 2, 3)) - [150, 50, 150]).max() < 3
    assert [i for i, _ in iter_frames(path, start=3, end=10, step=3)] == [3, 6, 9]
    spread = read_sampled_frames(path, 4)   # frames 0, 3, 6, 9 of 12
    assert np.abs(spread.mean(axis=(1, 2, 3)) - [10, 70, 130, 190]).max() < 3


def test_odd_sizes_are_cropped_even_and_one_frame_is_a_png(tmp_path):
    path = write_video(tmp_path / "odd.mp4", ramp(3, 33, 47), fps=8)
    assert (probe_video(path).width, probe_video(path).height) == (46, 32)
    png = write_video(tmp_path / "one.mp4", ramp(1), fps=8)
    assert png.endswith("one.png")


def test_full_resolution_colour_keeps_small_saturated_shapes(tmp_path):
    """4:2:0 halves colour resolution, which costs a 32x32 clip of coloured dots ~30 dB; the
    yuv444p option (used for training data) keeps them near-lossless."""
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.choice([0, 255], size=(1, 32, 32, 3)).astype(np.uint8), 4, axis=0)

    def psnr(pix_fmt):
        back, _ = read_video(write_video(tmp_path / f"{pix_fmt}.mp4", frames, fps=8, crf=10, pix_fmt=pix_fmt))
        return 10 * np.log10(255 ** 2 / np.mean((back.astype(np.float64) - frames) ** 2))

    assert psnr("yuv444p") > 35 > psnr("yuv420p") + 10
    with pytest.raises(InputError, match="pixel format 'rgb48'"):
        write_video(tmp_path / "x.mp4", frames, fps=8, pix_fmt="rgb48")


def test_bad_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(InputError, match="cannot be opened"):
        read_video(tmp_path / "junk.mp4")
    path = write_video(tmp_path / "a.mp4", ramp(), fps=8)
    with pytest.raises(InputError, match="has only 12 frames"):
        read_video(path, [20])
    with pytest.raises(InputError, match="uint8"):
        write_video(tmp_path / "f.mp4", ramp().astype(np.float32), fps=8)
    with pytest.raises(InputError, match="no frames"):
        write_video(tmp_path / "e.mp4", [], fps=8)


def test_sample_indices_match_reference_rules():
    assert sample_indices(10, 1) == [5]  # middle frame
    assert sample_indices(100, 4) == [0, 25, 50, 75]  # linspace(0, n, 4, endpoint=False)
    with pytest.raises(InputError):
        sample_indices(0, 3)


def test_outputs_are_checked_before_any_frame_exists(tmp_path):
    from easyanimate_core.video_io import VideoWriter, check_output

    assert check_output(tmp_path / "new" / "clip.mkv", 24, 9) == tmp_path / "new" / "clip.mkv"
    assert check_output(tmp_path / "still", 8, 1) == tmp_path / "still"   # one frame: a PNG, any name
    for fps in (0, -5, float("nan"), float("inf"), "24", True):
        with pytest.raises(InputError, match="is not a positive number of frames per second"):
            check_output(tmp_path / "clip.mp4", fps, 9)
        with pytest.raises(InputError, match="is not a positive number of frames per second"):
            VideoWriter(tmp_path / "clip.mp4", fps)
    with pytest.raises(InputError, match="has the extension '.avi'"):
        check_output(tmp_path / "clip.avi", 24, 9)
    assert not list(tmp_path.glob("clip*"))
