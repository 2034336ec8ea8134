"""``python -m bench``: run the whole benchmark and write ``bench/results/<date>.{md,png,json}``.

The default is the full run (about 10 minutes); ``--quick`` is a 2-3 minute rehearsal. See
docs/benchmarks.md for the method.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .harness import TARGETS, Settings, run
from .load import HarnessError, parse_cpus
from .report import checks, write
from .workloads import WORKLOADS

HERE = Path(__file__).resolve().parent


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the whole benchmark; write bench/results/<date>.md, .png and .json.",
    )
    parser.add_argument("--quick", action="store_true", help="1 s warm-up, 1 x 2 s per point")
    parser.add_argument("--workloads", default="w1,w2", help="comma list of: w1, w2")
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma list of: {', '.join(TARGETS)}"
    )
    parser.add_argument(
        "--concurrency", type=_ints, default=(1, 16, 64), help="comma list (default 1,16,64)"
    )
    parser.add_argument("--seconds", type=int, help="seconds per measured sample (default 4)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up per point (default 2)")
    parser.add_argument("--repeats", type=int, help="samples per point, median kept (default 3)")
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for servers and C1")
    parser.add_argument("--client-cpus", default="1", help="taskset CPU list for load generators")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    parser.add_argument(
        "--tuned",
        type=int,
        metavar="THREADS",
        dest="threads",
        help="run the hand-tuned modelport.yaml (the workloads' batching limits, THREADS "
        "intra-op threads) instead of modelport's defaults; its rows are labelled tuned",
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="SECONDS",
        help="py-spy the modelport server at W1 HTTP JSON, top concurrency (default 10; 0 off)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=HERE / "_work", help="generated models, bodies, logs"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    parser.add_argument("--name", help="results file stem (default: today's date)")
    parser.add_argument("--note", default="", help="a caveat printed at the top of the results")
    args = parser.parse_args(argv)
    unknown = [w for w in args.workloads.split(",") if w not in WORKLOADS]
    unknown += [t for t in args.targets.split(",") if t not in TARGETS]
    if unknown:
        parser.error(f"unknown workload or target: {', '.join(unknown)}")
    quick = args.quick
    settings = Settings(
        work_dir=args.work_dir,
        workloads=tuple(WORKLOADS[w] for w in args.workloads.split(",")),
        targets=tuple(args.targets.split(",")),
        concurrency=args.concurrency,
        seconds=args.seconds or (2 if quick else 4),
        warmup=args.warmup if args.warmup is not None else (1 if quick else 2),
        repeats=args.repeats or (1 if quick else 3),
        c1_seconds=0.5 if quick else 2.0,
        server_cpus=None if args.no_pin else args.server_cpus,
        client_cpus=None if args.no_pin else args.client_cpus,
        threads=args.threads,
        cold_starts=1 if quick else 3,
        import_runs=3 if quick else 5,
        profile_seconds=args.profile if args.profile is not None else (0 if quick else 10),
    )
    _check_cpus(settings)
    return settings, args


def _check_cpus(settings: Settings) -> None:
    allowed = os.sched_getaffinity(0)
    for cpus in (settings.server_cpus, settings.client_cpus):
        if cpus is None:
            continue
        try:
            wanted = parse_cpus(cpus)
        except ValueError:
            raise SystemExit(f"CPU list {cpus!r} is not a taskset list such as 0 or 0-3") from None
        if not wanted <= allowed:
            raise SystemExit(
                f"CPU list {cpus!r} is not available here (allowed: {sorted(allowed)}); "
                "pass --server-cpus/--client-cpus or --no-pin"
            )


def main(argv: list[str] | None = None) -> int:
    settings, args = parse(argv)
    try:
        results = run(settings, log=lambda line: print(line, flush=True)).to_dict()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stem = args.name or time.strftime("%Y-%m-%d", time.gmtime())
    md, png = write(results, args.out, stem, note=args.note)
    print(f"\nwrote {md}" + (f" and {png}" if png else ""))
    for check in checks(results):
        print(f"  {check.name}: {check.measured} (goal {check.goal})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
