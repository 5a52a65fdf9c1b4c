"""The global (all-frames) attention never materialises the N x N score matrix: a fresh process
running one hybrid motion module over 36 latent frames x 32 x 32 tokens (N = 36,864; dense fp32
scores for 2 heads would be 10 GiB) stays within 1.5 GB peak RSS, torch itself included."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_dit.py"


@pytest.mark.slow
def test_global_attention_peak_memory():
    out = subprocess.run([sys.executable, str(BENCH), "--global-memory", "36", "32", "32"],
                         check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)
    assert result["tokens"] == 36 * 32 * 32
    assert result["peak_rss_mib"] * 2 ** 20 < 1.5e9
