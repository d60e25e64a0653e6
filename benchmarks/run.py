"""`make bench`: llv against a bare forward pass, the reference algorithm and power iteration.

Writes ``benchmarks/RESULTS.md``: the machine, the versions, the date, and every target as a
ratio measured side by side in this run, met or missed (by how much, and why).

    python benchmarks/run.py                  # the full run (under 15 minutes on 2 cores)
    python benchmarks/run.py --quick          # a smoke run of every benchmark (about a minute)
    python benchmarks/run.py --only forward,exact,hessian
    python benchmarks/run.py --only approx --out /tmp/approx.md   # one section, RESULTS.md untouched
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> module with ``run(quick: bool) -> Section``, in the order of RESULTS.md
BENCHMARKS = {
    "forward": "benchmarks.forward_pass",
    "exact": "benchmarks.exact_mode",
    "approx": "benchmarks.approx_mode",
    "reference": "benchmarks.reference_algorithm",
    "hessian": "benchmarks.hessian",
    "memory": "benchmarks.memory",
    "gpu": "benchmarks.gpu",
}
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run of every benchmark"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: CPU-time ratios stay steady on a shared machine)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the results (default benchmarks/RESULTS.md; a temp file with --quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks.common import (
        Section,
        Target,
        load_average,
        machine_rows,
        steady_allocator,
        table,
    )
    from llv.console import configure

    configure(quiet=True)
    torch.set_num_threads(args.threads)
    steady = steady_allocator()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s) {', '.join(unknown)}; valid: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    out = args.out or (
        Path(tempfile.gettempdir()) / "llv-bench-quick.md" if args.quick else RESULTS
    )
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = load_average()
    sections, failed = [], False
    for name in names:
        print(f"[bench] {name} …", flush=True)
        clock = time.perf_counter()
        try:
            module = importlib.import_module(BENCHMARKS[name])
            section = (
                module.run(quick=args.quick, threads=args.threads)
                if name == "memory"
                else module.run(quick=args.quick)
            )
        except Exception as exc:  # one broken benchmark still leaves the others' results
            failed = True
            traceback.print_exc()
            section = Section(
                name,
                [
                    Target(
                        f"{name}: failed",
                        float("nan"),
                        "info",
                        note=" ".join(str(exc).split())[:300],
                    )
                ],
            )
        section.seconds = time.perf_counter() - clock
        print(f"[bench] {name}: {section.seconds:.0f} s", flush=True)
        for t in section.targets:
            print(f"    {t.name}: {t.value_text()} (target {t.target_text}) {t.status}", flush=True)
        sections.append(section)
    total = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    lines = [
        "# llv benchmarks",
        "",
        f"Written by `{'python benchmarks/run.py ' + ' '.join(argv or sys.argv[1:])}`"
        f"{' (quick smoke mode: tiny sizes, not results)' if args.quick else ''} "
        f"on {started:%Y-%m-%d %H:%M} UTC in {total / 60:.1f} min. Every figure is a ratio of two "
        "costs measured side by side in this run (the sides take turns, the ratio is formed "
        "per repetition, the median is reported), on CPU time of this process and its reaped "
        "children, so that the ratios hold on a shared machine.",
        "",
        *table(
            ["machine", ""],
            [
                *machine_rows(args.threads),
                (
                    "load average (1, 5, 15 min)",
                    f"{load_before} at the start, {load_average()} at the end",
                ),
                (
                    "allocator",
                    "glibc keeps freed memory (`mallopt`: trim threshold 1 GiB, mmap threshold "
                    "32 MiB), so that page faults do not fall on whichever side the allocator's "
                    "history picks; the memory benchmark's subprocesses run with the defaults"
                    if steady
                    else "default (mallopt unavailable)",
                ),
            ],
        ),
        "",
        "## Targets",
        "",
        *table(
            ["what", "measured", "target", "status", "why / notes"],
            [
                (t.name, t.value_text(), t.target_text, t.status, t.note)
                for s in sections
                for t in s.targets
            ],
        ),
        "",
    ]
    for s in sections:
        lines += [f"## {s.title}", "", f"({s.seconds:.0f} s)", "", *s.body, ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines).rstrip() + "\n")
    print(f"[bench] wrote {out} ({total / 60:.1f} min)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
