import subprocess
import sys
from pathlib import Path

import pytest

from easyanimate_core import progress

ROOT = Path(__file__).resolve().parents[1]


def test_track_reports_after_each_item_and_stops_on_interrupt():
    seen = []

    def report(done, total, preview=None):
        seen.append((done, total))
        if done == 2:
            raise progress.Interrupted

    processed = []
    with pytest.raises(progress.Interrupted):
        for item in progress.track(range(5), 5, report):
            processed.append(item)
    assert processed == [0, 1] and seen == [(1, 5), (2, 5)]


def test_console_progress_accepts_restarts():
    bar = progress.console("test")
    for total in (3, 2):
        for done in range(1, total + 1):
            bar(done, total)


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "training" / "run.py"), *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_lists_commands():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("generate", "preprocess", "vae", "dit-motion", "motion-lora", "demo-train"):
        assert command in result.stdout


def test_cli_unknown_command_is_one_line_error():
    result = _run("paint")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "unknown command 'paint'" in result.stderr
