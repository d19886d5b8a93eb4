"""SPEC §10, proven by killing the driver: `kill -9` at 30+ distinct moments of a run (across
submit, flush, poll and retry), then a fresh driver finishes it. After every kill, each job
ends in the right state, each attempt ran exactly once, and the database is sound.

The moments come from the run itself: one clean run with HOUSEKEEPER_TRACE_POINTS lists every
fault point it passes (store commits, scheduler commands, claim/submit boundaries), counted
per stage; the suite then kills fresh runs at a spread of them (HOUSEKEEPER_CRASH_AT, see
housekeeper/faults.py). The same suite runs on the live SLURM cluster and on the local backend.
"""
from __future__ import annotations

import collections
import concurrent.futures
import time
from pathlib import Path

import pytest

from .pipeline import check_run, run_driver

MIN_MOMENTS = 32
STAGES = ("submit", "flush", "poll", "retry")


def trace_moments(folder: Path, scheduler: str) -> list[str]:
    """Every fault point a clean run passes, in order (`stage:name#n`)."""
    trace = folder / "trace.txt"
    assert run_driver(folder, scheduler, {"HOUSEKEEPER_TRACE_POINTS": str(trace)}) == 0, (folder / "driver.log").read_text()
    check_run(folder, scheduler)  # the clean run itself ends as the model says
    return trace.read_text().split()


def choose(moments: list[str]) -> list[str]:
    """At least MIN_MOMENTS distinct moments, spread over the stages and over the kinds of
    point in each stage (store commits, scheduler commands, claim/submit boundaries): first
    and last occurrence of each kind, then ones in between. Stages that depend on timing
    (flush and poll repeat while monitoring) take from their first 70% only, since a later
    run may poll fewer times than the traced one."""
    by_stage: dict[str, dict[str, list[str]]] = collections.defaultdict(dict)
    for moment in moments:
        stage, _, rest = moment.partition(":")
        by_stage[stage].setdefault(rest.partition("#")[0], []).append(moment)
    for stage in STAGES:
        assert by_stage[stage], f"the traced run passed no fault point in stage {stage}: {sorted(by_stage)}"
    quota = {"open": 2, "submit": 4, "flush": 12, "poll": 12, "retry": 6}
    chosen: list[str] = []
    for stage, kinds in by_stage.items():
        spread = []
        for items in kinds.values():
            pool = items[: max(1, int(len(items) * 0.7))] if stage in ("flush", "poll") else items
            spread.append([pool[i] for i in dict.fromkeys(_bisection(len(pool)))])
        picked: list[str] = []
        while len(picked) < quota.get(stage, 2) and any(spread):
            for order in spread:
                if order and len(picked) < quota.get(stage, 2):
                    picked.append(order.pop(0))
        chosen.extend(picked)
    return sorted(set(chosen), key=moments.index)


def _bisection(n: int) -> list[int]:
    """0, n-1, then the midpoints of ever finer halves: evenly spread whatever is taken."""
    order, spans = [0, n - 1], [(0, n - 1)]
    while spans:
        low, high = spans.pop(0)
        if high - low > 1:
            mid = (low + high) // 2
            order.append(mid)
            spans += [(low, mid), (mid, high)]
    return [i for i in order if 0 <= i < n]


def kill_and_finish(base: Path, scheduler: str, moment: str) -> str:
    folder = base / moment.replace(":", "_").replace("#", "_")
    rc = run_driver(folder, scheduler, {"HOUSEKEEPER_CRASH_AT": moment})
    assert rc in (-9, 0), f"{moment}: the driver ended with {rc}: {(folder / 'driver.log').read_text()[-3000:]}"
    assert run_driver(folder, scheduler, {}) == 0, (folder / "driver.log").read_text()[-3000:]
    check_run(folder, scheduler)
    return "killed" if rc == -9 else "not reached"


def run_suite(base: Path, scheduler: str, workers: int) -> None:
    started = time.time()
    moments = choose(trace_moments(base / "traced", scheduler))
    assert len(moments) >= MIN_MOMENTS, f"only {len(moments)} moments to kill at: {moments}"
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        outcomes = dict(zip(moments, pool.map(lambda m: kill_and_finish(base, scheduler, m), moments)))
    killed = [m for m, how in outcomes.items() if how == "killed"]
    stages = collections.Counter(m.split(":", 1)[0] for m in killed)
    print(f"{scheduler}: {len(killed)} kills in {time.time() - started:.0f} s, by stage {dict(stages)}; "
          f"not reached: {[m for m, how in outcomes.items() if how != 'killed']}")
    assert len(killed) >= 30, f"only {len(killed)} of the chosen moments were reached: {outcomes}"
    assert all(stages[stage] >= 2 for stage in STAGES), stages


@pytest.mark.slurm
def test_driver_killed_at_30_moments_on_slurm(accounting: None, slurm: Path) -> None:
    run_suite(slurm, "slurm", workers=4)


def test_driver_killed_at_30_moments_on_the_local_backend(workdir: Path) -> None:
    run_suite(workdir, "local", workers=2)


def test_a_moment_names_one_place(tmp_path: Path) -> None:
    """HOUSEKEEPER_CRASH_AT counts per stage: the 2nd flush commit kills there, not before."""
    folder = tmp_path / "one"
    trace = tmp_path / "trace.txt"
    rc = run_driver(folder, "local", {"HOUSEKEEPER_CRASH_AT": "flush:store.commit#2", "HOUSEKEEPER_TRACE_POINTS": str(trace)})
    assert rc == -9
    assert trace.read_text().split()[-1] == "flush:store.commit#2"
    assert [m for m in trace.read_text().split() if m.startswith("flush:store.commit#")] == [
        "flush:store.commit#1", "flush:store.commit#2"]  # fmt: skip
