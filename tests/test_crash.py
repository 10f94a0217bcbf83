"""SIGKILL at random moments loses nothing: the fault-injection harness, 20 trials in CI.

`python tests/crash_harness.py --trials 200` runs the long version on demand
(as does DPL_SLOW=1 pytest -m slow tests/test_crash.py).
"""

from __future__ import annotations

import os
import random

import pytest

import crash_harness


def _run(trials: int, tmp_path):
    seed = int(os.environ.get("DPL_CRASH_SEED", random.randrange(1 << 30)))
    result = crash_harness.run(trials, seed=seed, work=str(tmp_path / "crash"))
    assert not result.failures, result.summary()
    assert result.trials == trials
    for scenario, outcomes in result.by_scenario.items():  # the kills did land in the middle of the work
        assert set(outcomes) - {"finished before the kill"}, result.summary()
    return result


def test_twenty_random_kills_lose_nothing(tmp_path):
    _run(20, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("DPL_SLOW"), reason="200 kills take half an hour; set DPL_SLOW=1")
def test_two_hundred_random_kills_lose_nothing(tmp_path):
    _run(200, tmp_path)
