"""`preprocess all` at its DEFAULT settings on footage the pack has never seen, as a new user runs
it (issue 28): 256x144 at 24 fps, hard cuts, scenes moving 0 to 9 px per frame over texture with an
object wrapping around the frame edge, burned-in subtitles, a partly decodable download, a
corrupt file and caption sidecars."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_videos import write_footage

from easyanimate_core.video_io import iter_frames, probe_video
from training.preprocess.jobs import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    sources = tmp_path_factory.mktemp("footage")
    truth = write_footage(sources)
    workdir = tmp_path_factory.mktemp("work")
    result = subprocess.run([sys.executable, str(ROOT / "training" / "run.py"), "preprocess", "all",
                             "--input", str(sources), "--workdir", str(workdir)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    return sources, truth, workdir, result


def test_the_run_succeeds_and_says_its_caption_mode_before_working(run):
    _, _, workdir, result = run
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stderr
    assert "[caption] sidecar (no --caption-model given)" in log
    assert log.index("[caption] sidecar") < log.index("[split]")  # said before any work
    assert "captions: sidecar (no --caption-model given)" in (workdir / "summary.txt").read_text()


def test_cuts_equal_the_truth_within_two_frames(run):
    _, truth, workdir, _ = run
    split = {r["source"]: r for r in read_jsonl(workdir / "split.jsonl")}
    for name, cuts in truth["cuts"].items():
        found = split[name]["cuts"]
        assert len(found) == len(cuts) and all(abs(f - c) <= 2 for f, c in zip(found, cuts)), (name, found, cuts)


def test_every_usable_scene_is_kept_and_the_still_text_and_short_ones_are_not(run):
    sources, truth, workdir, _ = run
    rows = json.loads((workdir / "metadata.json").read_text())
    kept = {}
    for row in rows:
        record = next(c for r in read_jsonl(workdir / "split.jsonl") for c in r.get("clips", [])
                      if Path(c["file_path"]).name == Path(row["file_path"]).name)
        kept[record["source"], record["start_frame"]] = record["end_frame"]
        assert row["text"] == f"footage {Path(record['source']).stem}"  # the source's sidecar
        assert (workdir / row["file_path"]).is_file()
    usable = [(name, start, end) for name, start, end, _ in truth["usable"]]
    decoded = sum(1 for _ in iter_frames(sources / "download.mp4"))
    usable.append(("download.mp4", 0, decoded))
    assert len(kept) == len(usable), (sorted(kept), usable)
    for name, start, end in usable:
        match = [key for key in kept if key[0] == name and abs(key[1] - start) <= 2]
        assert match and abs(kept[match[0]] - end) <= 2, (name, start, end, sorted(kept))
    drops = {(r["source"], r["start_frame"]): r.get("drop") for stage in ("text", "motion")
             for r in read_jsonl(workdir / f"{stage}.jsonl")}
    for name, start, _, why in truth["unusable"]:
        dropped = [d for (source, first), d in drops.items() if source == name and abs(first - start) <= 2]
        if why == "short":
            split = next(r for r in read_jsonl(workdir / "split.jsonl") if r["source"] == name)
            assert any(abs(s - start) <= 2 and reason == "short" for s, _, reason in split["dropped_scenes"])
        else:
            assert dropped == [{"still": "motion_low", "text": "text"}[why]], (name, start, dropped)


def test_the_corrupt_file_and_the_damaged_download_are_reported(run):
    sources, truth, workdir, result = run
    split = {r["source"]: r for r in read_jsonl(workdir / "split.jsonl")}
    assert "cannot be opened" in split["corrupt.mp4"]["error"]
    assert "skipped corrupt.mp4" in result.stderr
    download = split["download.mp4"]
    name, header = truth["truncated"]
    decoded = sum(1 for _ in iter_frames(sources / name))
    assert probe_video(sources / name).num_frames == header > decoded
    assert download["container_frames"] == header and download["num_frames"] == decoded
    assert "damaged" in download and f"only {decoded} of the {header} frames" in download["damaged"]
    assert f"damaged download.mp4: only {decoded} of the {header}" in result.stderr
    summary = (workdir / "summary.txt").read_text()
    split_line = next(line for line in summary.splitlines() if line.startswith("split*"))
    assert "1 source(s) DAMAGED" in split_line and split_line.split()[3] == "1"  # one unreadable source
