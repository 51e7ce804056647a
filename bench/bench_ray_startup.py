"""Ray's fixed cost per ``score(engine="ray")`` job, part by part, and what it allows.

Usage::

    TORCH_HOME=../shared/weights PYTHONPATH=python python bench/bench_ray_startup.py

Needs the ``ray`` extra and MVTec AD *bottle* with torchvision's MobileNetV2 weights under
``../shared`` (``--root``, ``TORCH_HOME``). Prints a table and writes
``bench/results/ray_startup.json``.

A job that starts its own Ray pays, before and after scoring, (1) ``ray.init`` (GCS, raylet,
dashboard agent, runtime-env agent, log monitor, autoscaler monitor, prestarted workers:
separate processes), (2) one actor process per worker that imports torch, torchvision and
structcore and loads the model (:class:`structcore.distributed._ray._RayScorer`, exactly as
the engine builds it), and (3) ``ray.shutdown``. Each part is timed (wall seconds) and its
CPU seconds are taken from ``/proc/stat`` (every process on the machine: run it on a quiet
machine), over ``--repeats`` rounds (medians); the CPU seconds of each Ray process after
``ray.init`` are listed once. The ``local`` rate (one process, ``--workers`` threads,
``Detector.predict`` on ``--images`` bottle images, after a warm-up batch) gives the bound
this fixed cost puts on the end-to-end efficiency of a job of N images, if the actors score
as fast as the local process once started (they do: bench_distributed.py):
``efficiency(N) <= (N / rate) / (N / rate + fixed)``, and the smallest N at which that bound
reaches 0.85. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_model, fit_bottle_model, load_avg, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ray_startup.json"


def _busy_cpu_s() -> float:
    """CPU seconds spent by the whole machine so far (user + nice + system + irq ...)."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _proc_cpu_s(pid: str) -> tuple[float, str]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        return 0.0, ""
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"), cmd


def _ray_processes(before: set[str]) -> list[tuple[float, str]]:
    """(CPU s, short name) of the processes started since ``before`` (Ray's)."""
    rows = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid not in before:
            cpu, cmd = _proc_cpu_s(pid)
            if cmd:
                name = next((w for w in cmd.split() if "ray" in w.lower()), cmd.split()[0])
                rows.append((cpu, Path(name).name[:60]))
    return sorted(rows, reverse=True)


def _round(model: Path, out: Path, workers: int, list_processes: bool) -> dict[str, Any]:
    import ray

    from structcore.distributed._ray import _RayScorer, scorer_arguments
    from structcore.distributed._worker import file_sha256

    rec: dict[str, Any] = {}
    before = set(os.listdir("/proc"))
    c, t = _busy_cpu_s(), time.perf_counter()
    ray.init(include_dashboard=False, logging_level="WARNING", num_cpus=workers)
    rec["init_s"], rec["init_cpu_s"] = time.perf_counter() - t, _busy_cpu_s() - c
    time.sleep(1.0)  # let the agents finish starting before the actors are timed
    if list_processes:
        rec["processes"] = _ray_processes(before)
    # exactly what the engine hands its actors (the model and its bank in the object store)
    kwargs = scorer_arguments(
        {
            "model_path": str(model),
            "output": str(out),
            "chunk_size": 16,
            "batch_size": 16,
            "maps": None,
            "cwd": os.getcwd(),
        },
        file_sha256(model),
        threads=1,
    )
    actor_cls = ray.remote(num_cpus=1)(_RayScorer)
    c, t = _busy_cpu_s(), time.perf_counter()
    actors = [actor_cls.remote(**kwargs) for _ in range(workers)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    rec["actors_s"], rec["actors_cpu_s"] = time.perf_counter() - t, _busy_cpu_s() - c
    del actors
    c, t = _busy_cpu_s(), time.perf_counter()
    ray.shutdown()
    rec["shutdown_s"], rec["shutdown_cpu_s"] = time.perf_counter() - t, _busy_cpu_s() - c
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=64, help="bottle images for the local rate")
    ap.add_argument("--train", type=int, default=50, help="bottle train images for the model")
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared/datasets/mvtec_ad/bottle")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if not args.root.is_dir():
        print(f"needs MVTec AD bottle at {args.root} (--root)", file=sys.stderr)
        return 1
    os.environ.setdefault("TORCH_HOME", str(ROOT.parent / "shared" / "weights"))
    import torch

    from structcore import Detector

    work = Path(tempfile.mkdtemp(prefix="bench-ray-startup-"))
    model = work / "model.npz"
    fit_bottle_model(args.root, args.train, model)
    images = sorted(str(p) for p in args.root.glob("t*/*/*.png"))
    images = (images * (args.images // len(images) + 1))[: args.images]
    print(f"CPU: {cpu_model()}; load {load_avg()}; {args.workers} workers", flush=True)

    torch.set_num_threads(args.workers)
    det = Detector.load(model)
    det.threads, det.progress = args.workers, False
    det.predict(images[:16])  # warm-up
    rates = []
    rounds = []
    for r in range(args.repeats):
        t = time.perf_counter()
        det.predict(images)
        rates.append(len(images) / (time.perf_counter() - t))
        rec = _round(model, work / f"out-{r}", args.workers, list_processes=r == 0)
        rounds.append(rec)
        print(
            f"round {r}: init {rec['init_s']:.2f} s ({rec['init_cpu_s']:.1f} CPU s), "
            f"{args.workers} actors {rec['actors_s']:.2f} s ({rec['actors_cpu_s']:.1f} CPU s), "
            f"shutdown {rec['shutdown_s']:.2f} s; local {rates[-1]:.1f} img/s",
            flush=True,
        )
    med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0] if k != "processes"}
    rate = statistics.median(rates)
    fixed = med["init_s"] + med["actors_s"] + med["shutdown_s"]
    print(f"\nRay processes after ray.init (CPU s, round 0): {rounds[0]['processes'][:12]}")
    print("\n| part | wall s (median) | CPU s (median, whole machine) |\n|---|---|---|")
    for part in ("init", "actors", "shutdown"):
        print(f"| {part} | {med[part + '_s']:.2f} | {med[part + '_cpu_s']:.1f} |")
    print(f"| fixed total | {fixed:.2f} | |")
    bound = {n: (n / rate) / (n / rate + fixed) for n in (512, 1024, 2048, 4096, 16384)}
    n85 = 0.85 / 0.15 * fixed * rate
    print(
        f"\nlocal {rate:.1f} img/s ({args.workers} threads); efficiency bound "
        + ", ".join(f"{n}: {b:.2f}" for n, b in bound.items())
        + f"; reaches 0.85 from ~{n85:.0f} images"
    )
    write_results(
        args.out,
        args,
        {
            "rounds": rounds,
            "local_images_per_s": rates,
            "median": med,
            "fixed_s": fixed,
            "efficiency_bound": bound,
            "images_for_0.85": n85,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
