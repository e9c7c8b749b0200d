"""The soak of bench/soak.py, bounded for CI (issue 8, point 6): steady dnsperf load while
Services churn through the API. Zero lost queries, no file-descriptor growth, RSS growth under
5%. The 30-minute run and its figures are in the README."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_a_short_soak_loses_no_query_and_grows_no_file_descriptors_or_memory() -> None:
    if shutil.which("dnsperf") is None:
        pytest.fail("dnsperf is not installed: apt-get install dnsperf (the README setup does)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "15", "--round", "5", "--qps", "1000", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    # What went wrong, whatever it was (a dnsperf error, a server that did not answer or stop).
    assert result.returncode == 0, f"bench/soak.py exited {result.returncode}:\n{result.stdout}{result.stderr[-3000:]}"
    totals = json.loads(result.stdout.strip().splitlines()[-1])
    assert totals["sent"] >= 14_000 and totals["churn_changes"] > 100, result.stdout
    assert totals["lost"] == 0, result.stdout
    assert totals["fds_last"] <= totals["fds_first"], result.stdout
    assert totals["rss_growth"] < 0.05, result.stdout
