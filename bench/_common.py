"""Helpers shared by the bench/ scripts: timing races, BLAS thread caps, machine facts.

Imported as ``_common`` (the scripts run as ``python bench/bench_x.py``, so bench/ is on
``sys.path``). Nothing here asserts: benchmarks report, they never pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = [
    "blas_threads",
    "cpu_flags",
    "cpu_model",
    "cpu_pressure",
    "delta_table",
    "fit_bottle_model",
    "load_avg",
    "per_call",
    "race",
    "write_results",
]


def per_call(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn``, from one timed loop of ``number`` calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def race(
    fns: Mapping[str, tuple[Callable[[], object], int]],
    rounds: int,
    best: dict[str, float] | None = None,
) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds.

    Parameters
    ----------
    fns : mapping of name -> (function, number)
        Each round times ``number`` back-to-back calls of each function in turn, so every
        implementation sees the same machine noise (round-robin, not one after the other).
    rounds : int
        Samples per function; the median is reported.
    best : dict, optional
        Receives the fastest round of each function (the noise floor), by name.

    Returns
    -------
    dict of name -> median seconds per call. Each function is called once first (warm-up:
    caches, thread pools, lazy imports).
    """
    for fn, _ in fns.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (fn, number) in fns.items():
            samples[name].append(per_call(fn, number))
    if best is not None:
        best.update({name: min(v) for name, v in samples.items()})
    return {name: statistics.median(v) for name, v in samples.items()}


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Cap BLAS/OpenMP pools at ``n`` threads inside the block (threadpoolctl, the bench
    extra); without threadpoolctl, leave them as they are."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n):
        yield


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_flags(prefixes: tuple[str, ...] = ("avx", "fma", "f16c", "amx")) -> list[str]:
    """The CPU's /proc/cpuinfo flags starting with one of ``prefixes`` (Linux; else [])."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(prefixes))
    except OSError:
        pass
    return []


def load_avg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages, rounded; None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_pressure() -> float | None:
    """Linux PSI 'some avg10': % of the last 10 s in which runnable tasks waited for a CPU."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(first.split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


def fit_bottle_model(root: Path, n_train: int, path: Path, coreset_ratio: float = 0.1) -> None:
    """Fit the library's default detector with MobileNetV2 on the first ``n_train`` bottle
    train images under ``root`` (MVTec AD layout) and save it to ``path``."""
    from structcore import Detector

    train = sorted(str(p) for p in (root / "train" / "good").glob("*.png"))[:n_train]
    det = Detector("mobilenet_v2", coreset_ratio=coreset_ratio, progress=False)
    det.fit(train)
    det.save(path)


def write_results(path: Path, args: object, payload: Mapping[str, object]) -> None:
    """Print the load average, then write ``{"cpu", "args", **payload}`` as JSON to ``path``
    (folders created) and say so: how every bench script ends."""
    print(f"load after: {load_avg()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"cpu": cpu_model(), "args": {k: str(v) for k, v in vars(args).items()}}
    path.write_text(json.dumps({**record, **payload}, indent=2))
    print(f"wrote {path}")


def delta_table(
    res: Mapping[str, Mapping[str, Mapping[str, float]]],
    variants: list[str],
    sets: list[str],
    digits: int = 4,
) -> str:
    """Markdown table, a row per variant and a column per set: ``max``'s AUROC, every other
    variant's delta to it with its bootstrap interval, ``+``/``-`` when the interval excludes 0
    (``res[set][variant]`` holds ``auroc`` or ``delta``, ``lo``, ``hi``)."""
    lines = ["| variant | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for v in variants:
        cells = []
        for k in sets:
            e = res[k][v]
            if v == "max":
                cells.append(f"{e['auroc']:.{digits}f}")
            else:
                mark = "+" if e["lo"] > 0 else ("-" if e["hi"] < 0 else "")
                cells.append(f"{e['delta']:+.{digits}f} [{e['lo']:+.3f},{e['hi']:+.3f}]{mark}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
