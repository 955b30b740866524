"""``kedro run --pipelines distill`` on the bundled default, idle vs busy CPU.

Each run starts in a fresh project copy (every stage runs) as its own
``kedro`` process. "busy" keeps one other CPU-bound process spinning for the
whole run, as a colleague's job on a shared machine would. Rows:

- idle, automatic threads (the default ``threads: null``);
- busy, automatic threads (the run sees the busy core and uses the others);
- with ``--pinned``: busy, threads pinned to every core (what the automatic
  choice avoids; slow: up to 10x the idle run).

Printed: wall time, peak RSS of the run, and each time over the idle run's.

    python scripts/benchmark_busy.py --workdir /tmp/busy [--pipelines P] [--pinned]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
KEDRO = Path(sys.executable).with_name("kedro")


def _spin() -> None:
    while True:
        pass


def fresh_project(where: Path) -> Path:
    """A copy of the project's conf with empty data layers."""
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, where / name)
    shutil.copytree(
        ROOT / "conf", where / "conf", ignore=shutil.ignore_patterns("local")
    )
    (where / "conf" / "local").mkdir()
    (where / "src").mkdir()
    return where


class TreePeaks:
    """Peak RSS (MB) of a process and of each of its descendants (Dask
    workers, nannies), sampled every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.root, self.interval = psutil.Process(pid), interval
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            for proc in tree:
                try:
                    rss = proc.memory_info().rss / 2**20
                    name = "kedro" if proc is self.root else _role(proc)
                except psutil.Error:
                    continue
                old = self.peaks.get(proc.pid, (name, 0.0))[1]
                self.peaks[proc.pid] = (name, max(old, rss))

    def stop(self) -> str:
        """``kedro 2100 MB; worker 1900 MB; ...``: each process's peak."""
        self._stop.set()
        self._thread.join()
        rows = sorted(self.peaks.values(), key=lambda r: (r[0] != "kedro", -r[1]))
        return "; ".join(f"{name} {mb:.0f} MB" for name, mb in rows)


def _role(proc: psutil.Process) -> str:
    """What a descendant process is, from its command line."""
    line = " ".join(proc.cmdline())
    if "multiprocessing.resource_tracker" in line:
        return "resource tracker"
    return "worker" if "multiprocessing" in line else proc.name()


def timed_run(
    project: Path, pipelines: str, params: str
) -> tuple[float, float, str, str]:
    """Wall seconds, peak RSS (MB, the largest process of the run), the log of
    one ``kedro run`` process (kept as ``<project>/<pipelines>.log``) and the
    peak RSS of every process of the run (:class:`TreePeaks`)."""
    command = [str(KEDRO), "run", "--pipelines", pipelines]
    if params:
        command += ["--params", params]
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    log = project / f"{pipelines}.log"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        peaks = TreePeaks(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    per_process = peaks.stop()
    text = log.read_text()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"kedro run failed in {project}:\n{text[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, text, per_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--pipelines", default="distill")
    parser.add_argument("--pinned", action="store_true", help="add the pinned row")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    runs = [
        ("idle, automatic threads", False, ""),
        ("busy, automatic threads", True, ""),
    ]
    if args.pinned:
        runs.append((f"busy, threads={cores} (pinned)", True, f"threads={cores}"))
    rows = []
    for i, (name, busy, params) in enumerate(runs):
        spinner = mp.Process(target=_spin, daemon=True) if busy else None
        if spinner:
            spinner.start()
            time.sleep(2)
        try:
            project = fresh_project(args.workdir / f"run{i}")
            seconds, peak, _, _ = timed_run(project, args.pipelines, params)
        finally:
            if spinner:
                spinner.terminate()
                spinner.join()
        rows.append((name, seconds, peak))
        print(f"{name}: {seconds:.1f} s, peak RSS {peak:.0f} MB", flush=True)  # noqa: T201
    idle = rows[0][1]
    lines = [
        f"`kedro run --pipelines {args.pipelines}` on the bundled default; "
        f"{cores} cores, 1-min load {load:.2f} before the first run",
        "",
        "| run | wall time (s) | x idle | peak RSS (MB) |",
        "| --- | --- | --- | --- |",
        *(f"| {n} | {s:.1f} | {s / idle:.2f} | {p:.0f} |" for n, s, p in rows),
    ]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
