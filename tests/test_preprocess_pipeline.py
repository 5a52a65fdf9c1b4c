"""The whole chain on synthetic sources, kill-and-resume, torn writes, shards and merge."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic_videos import pan_frames, write_corrupt, write_scenes, write_text_clip

from easyanimate_core.video_io import probe_video, write_video
from training.preprocess import cli
from training.preprocess.jobs import Shard, read_jsonl, run_stage
from training.preprocess.metadata import load_metadata
from training.preprocess.motion import MAX_MOTION, MIN_MOTION

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """show.mp4: 4 scenes (moving, static, too short, moving); sub/pan.mp4: one moving scene;
    captioned.mp4: burned-in text; broken.mp4: not a video. Captions in .txt sidecars."""
    folder = tmp_path_factory.mktemp("sources")
    write_scenes(folder / "show.mp4", [45, 40, 25, 60], fps=10, speeds=[1.0, 0.0, 1.0, 1.2])
    write_scenes(folder / "sub" / "pan.mp4", [40], fps=10, speeds=[0.9], seed=11)
    write_text_clip(folder / "captioned.mp4", True, num_frames=40)
    write_corrupt(folder / "broken.mp4")
    (folder / "show.txt").write_text("a texture pans to the right")
    (folder / "sub" / "pan.txt").write_text("a slow pan")
    (folder / "captioned.txt").write_text("text on screen")
    return folder


def run_all(sources, workdir, *extra):
    argv = ["all", "--input", str(sources), "--workdir", str(workdir), *extra]  # sidecars found by default
    assert cli.main("preprocess", argv) == 0


def test_chain_keeps_moving_text_free_clips_and_skips_the_corrupt_file(sources, tmp_path, capsys):
    run_all(sources, tmp_path)
    split = {r["source"]: r for r in read_jsonl(tmp_path / "split.jsonl")}
    assert "error" in split["broken.mp4"] and "cannot be opened" in split["broken.mp4"]["error"]
    assert split["show.mp4"]["cuts"] == [45, 85, 110]
    drops = {r["file_path"]: r.get("drop") for name in ("text", "motion") for r in read_jsonl(tmp_path / f"{name}.jsonl")}
    assert drops["captioned-Scene-001.mp4"] == "text"
    assert drops["show-Scene-002.mp4"] == "motion_low"  # the static scene
    records = load_metadata(tmp_path / "metadata.json")
    assert sorted(Path(r["file_path"]).name for r in records) == [
        "pan-Scene-001.mp4", "show-Scene-001.mp4", "show-Scene-003.mp4"]
    for record in records:
        assert Path(record["file_path"]).is_absolute() and Path(record["file_path"]).is_file()
        assert record["type"] == "video" and record["text"] and MIN_MOTION < record["motion_score"] < MAX_MOTION
        info = probe_video(record["file_path"])
        assert (record["width"], record["height"], record["num_frames"]) == (info.width, info.height, info.num_frames)
    assert {r["text"] for r in records} == {"a texture pans to the right", "a slow pan"}
    summary = (tmp_path / "summary.txt").read_text()
    assert "text=1" in summary and "motion_low=1" in summary and "short_scene=1" in summary
    # the stored file is the reference's format: a JSON list, file_path relative to the data root
    stored = json.loads((tmp_path / "metadata.json").read_text())
    assert all(not Path(r["file_path"]).is_absolute() for r in stored)

    capsys.readouterr()
    run_all(sources, tmp_path)  # a rerun finds everything done
    assert "0 done now" in capsys.readouterr().err
    assert json.loads((tmp_path / "metadata.json").read_text()) == stored


def test_aesthetic_without_weights_passes_clips_unscored(sources, tmp_path, capsys):
    run_all(sources, tmp_path, "--skip", "text", "motion", "caption")
    assert "UNSCORED" in capsys.readouterr().err
    assert all("aesthetic_score" not in r for r in read_jsonl(tmp_path / "aesthetic.jsonl"))
    assert "(5 passed UNSCORED)" in (tmp_path / "summary.txt").read_text()


def test_shards_merge_into_the_unsharded_result(sources, tmp_path):
    run_all(sources, tmp_path / "whole")
    for index in (0, 1):
        run_all(sources, tmp_path / "sharded", "--num-shards", "2", "--shard-index", str(index))
    assert len(list((tmp_path / "sharded").glob("split.shard-*-of-00002.jsonl"))) == 2
    assert cli.main("preprocess", ["merge", "--workdir", str(tmp_path / "sharded")]) == 0
    whole = json.loads((tmp_path / "whole" / "metadata.json").read_text())
    merged = json.loads((tmp_path / "sharded" / "metadata.json").read_text())
    assert merged == whole
    shard_metadata = sorted(str(p) for p in (tmp_path / "sharded").glob("metadata.shard-*.json"))
    assert cli.main("preprocess", ["merge", "--output", str(tmp_path / "m.json"), *shard_metadata]) == 0
    assert [Path(r["file_path"]).name for r in load_metadata(tmp_path / "m.json")] == [
        Path(r["file_path"]).name for r in whole]


def test_shards_split_deterministically_and_follow_the_launcher(monkeypatch):
    items = [{"k": f"v{i:02d}"} for i in range(10)]
    parts = [Shard(i, 3).take(list(reversed(items)), "k") for i in range(3)]
    assert sorted(x["k"] for p in parts for x in p) == [x["k"] for x in items]
    assert parts[1] == [{"k": "v01"}, {"k": "v04"}, {"k": "v07"}]
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert Shard.resolve() == Shard(2, 4) and Shard.resolve(0, 1) == Shard(0, 1)
    with pytest.raises(Exception, match="shard index"):
        Shard(3, 3)


def test_a_torn_last_line_is_redone_and_a_failing_item_costs_only_its_line(tmp_path):
    out = tmp_path / "stage.jsonl"
    out.write_text('{"k": "a", "v": 1}\n{"k": "b", "v"')  # killed while writing b

    def work(batch):
        if any(item["k"] == "c" for item in batch):
            raise ValueError("c is unreadable")
        return [{**item, "v": 1} for item in batch]

    report = run_stage("t", [{"k": x} for x in "abcd"], "k", work, out, batch_size=3)
    records = read_jsonl(out)
    assert [r["k"] for r in records] == ["a", "b", "c", "d"] and report.done == 3 and report.errors == 1
    assert records[2]["error"] == "ValueError: c is unreadable" and records[3]["v"] == 1


def test_killed_stage_resumes_without_repeats_or_losses(tmp_path):
    clips = tmp_path / "clips"
    for k in range(40):
        write_video(clips / f"c{k:02d}.mp4", pan_frames(24, 120, 160, speed=0.1 * (k % 10), seed=k), fps=8)
    out = tmp_path / "motion.jsonl"
    command = [sys.executable, str(ROOT / "training" / "run.py"), "preprocess", "motion", "--input", str(clips),
               "--output", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 5:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.002)
    assert process.wait() == -signal.SIGKILL, "the stage finished before it could be killed"
    partial = len(read_jsonl(out))
    assert 5 <= partial < 40
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=300)
    names = [r["file_path"] for r in read_jsonl(out)]
    assert sorted(names) == [f"c{k:02d}.mp4" for k in range(40)]  # each once, none lost
    assert all("motion_score" in r for r in read_jsonl(out))


def test_stage_by_stage_equals_all_and_merge_joins_jsonl_shards(sources, tmp_path):
    run_all(sources, tmp_path / "all", "--skip", "aesthetic", "caption")
    work = tmp_path / "steps"
    main = lambda *argv: cli.main("preprocess", [str(a) for a in argv])
    assert main("split", "--input", sources, "--clips-dir", work / "clips", "--output", work / "split.jsonl") == 0
    assert main("text", "--input", work / "split.jsonl", "--output", work / "text.jsonl") == 0
    for index in (0, 1):
        assert main("motion", "--input", work / "text.jsonl", "--output", work / "motion.jsonl",
                    "--num-shards", 2, "--shard-index", index) == 0
    parts = sorted(work.glob("motion.shard-*.jsonl"))
    assert main("merge", "--output", work / "motion.jsonl", *parts) == 0
    assert main("metadata", "--input", work / "motion.jsonl", "--output", work / "meta.json",
                "--stages", work / "split.jsonl", work / "text.jsonl", work / "motion.jsonl") == 0
    assert read_jsonl(work / "motion.jsonl") == read_jsonl(tmp_path / "all" / "motion.jsonl")
    assert "motion_low=1" in (work / "summary.txt").read_text()
    names = [Path(r["file_path"]).name for r in load_metadata(work / "meta.json")]
    assert names == [Path(r["file_path"]).name for r in load_metadata(tmp_path / "all" / "metadata.json")]


def test_cli_errors_are_one_sentence(sources, tmp_path):
    from easyanimate_core.errors import EasyAnimateError

    cases = [
        (["text", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o.jsonl")], "neither"),
        (["all", "--input", str(sources), "--workdir", str(tmp_path), "--clip-model", str(tmp_path)], "needs both"),
        (["all", "--input", str(sources), "--workdir", str(tmp_path), "--captions", "model"], "--caption-model"),
        (["merge"], "needs --workdir"),
        (["merge", "--workdir", str(tmp_path / "empty")], "no stage files"),
    ]
    for argv, message in cases:
        with pytest.raises(EasyAnimateError, match=message):
            cli.main("preprocess", argv)


def test_metadata_loader_reads_json_jsonl_and_csv(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"file_path": "a.mp4", "text": "x", "type": "video", "width": 64}\n')
    (tmp_path / "m.csv").write_text("file_path,text,width,height\nimg.png,an image,32,16\n")
    (tmp_path / "bad.json").write_text('{"file_path": "a.mp4"}')
    video = load_metadata(tmp_path / "m.jsonl", root="/data")
    assert video == [{"file_path": "/data/a.mp4", "text": "x", "type": "video", "width": 64}]
    image = load_metadata(tmp_path / "m.csv")[0]
    assert image["type"] == "image" and image["file_path"] == str(tmp_path / "img.png") and image["height"] == 16
    from easyanimate_core.errors import InputError

    with pytest.raises(InputError, match="list of records"):
        load_metadata(tmp_path / "bad.json")
    with pytest.raises(InputError, match="does not exist"):
        load_metadata(tmp_path / "none.json")
    (tmp_path / "typo.json").write_text('[{"file_path": "a.mp4", "type": "Video"}]')
    with pytest.raises(InputError, match="gives .*a.mp4 the type 'Video', expected 'video' or 'image'"):
        load_metadata(tmp_path / "typo.json")


def test_bad_model_options_fail_before_any_work(sources, tmp_path):
    from easyanimate_core.errors import EasyAnimateError

    for argv, message in ((["--clip-model", str(tmp_path)], "needs both"),
                          (["--captions", "model"], "needs --caption-model"),
                          (["--text-detector", "easyocr"], "easyocr"),
                          (["--min-cut-jump", "-1"], "--min-cut-jump >= 0"),
                          (["--min-motion", "5", "--max-motion", "2"], "--min-motion 5.0 must be below"),
                          (["--thresholds", "10", "20"], "--thresholds was removed")):
        with pytest.raises(EasyAnimateError, match=message):
            cli.main("preprocess", ["all", "--input", str(sources), "--workdir", str(tmp_path), *argv])
        assert not (tmp_path / "split.jsonl").exists() and not (tmp_path / "clips").exists()


def test_a_run_that_keeps_nothing_fails_naming_the_filter_and_its_scores(sources, tmp_path):
    """Bounds no clip meets: the run exits non-zero, says which stage dropped how many and the
    range of their scores, writes the summary and no metadata."""
    command = [sys.executable, str(ROOT / "training" / "run.py"), "preprocess", "all", "--input", str(sources),
               "--workdir", str(tmp_path), "--min-motion", "500", "--max-motion", "1000"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: no clip was kept: split 5 clips cut from 4 sources")
    assert "text text=1 (text_score" in error and "--min-motion" not in error
    motion_part = error.split("motion motion_low=4 (motion_score ")[1]
    low, high = (float(x) for x in motion_part.split(")")[0].split("-"))
    assert 0 <= low < 0.2 < 5 < high < 10  # the static scene and the ~6 %/s pans
    assert not (tmp_path / "metadata.json").exists()
    assert "no clip kept" in (tmp_path / "summary.txt").read_text()


def test_every_preprocess_option_has_help_and_shows_its_default():
    import argparse

    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"split", "text", "motion", "aesthetic", "caption", "metadata", "merge", "all"}
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and len(action.help) > 10, (name, action.dest)
            if action.option_strings and action.default not in (None, False, []) and action.choices is None:
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
    text = " ".join(subparsers.choices["all"].format_help().split())
    assert "{opencv,easyocr}" in text and "(default: 27.0)" in text and f"(default: {MIN_MOTION})" in text


def test_the_trainers_data_loader_reads_the_metadata(sources, tmp_path):
    from training import data

    run_all(sources, tmp_path, "--skip", "aesthetic")
    entries = data.load_entries(str(tmp_path / "metadata.json"), None)
    assert len(entries) == 3 and all(Path(e["file_path"]).is_file() and e["type"] == "video" for e in entries)


def test_one_empty_shard_of_many_is_not_a_failure(sources, tmp_path):
    """Shard 1 of 4 holds only the corrupt file: it keeps nothing, which is no error for one shard
    (the merged run is what must keep clips); its metadata is an empty list."""
    run_all(sources, tmp_path, "--num-shards", "4", "--shard-index", "0")
    assert [r["source"] for r in read_jsonl(tmp_path / "split.shard-00001-of-00004.jsonl")] == ["broken.mp4"]
    assert json.loads((tmp_path / "metadata.shard-00001-of-00004.json").read_text()) == []
