"""Registration benchmark: RegSeg against ANTsPy and itk-elastix, side by side, on the same files.

Every job is one fresh process started as a user would start it (``regseg register ...``, or
``python`` with the peer's script), timed and measured as a whole; see ``bench/README.md``.

Usage (from the repository root)::

    python bench/registration/run.py --suites all            # every suite, final figures
    python bench/registration/run.py --suites 1,2 --quick     # a small subset in a few minutes

Suites (BENCHMARKS.md): 1 brain-mr, 2 prostate-mr-us, 3 lung-vessels, 4 known-transform recovery,
5 multi-modal prostate, 6 scaling (on the CPU unless ``--device`` says otherwise), 7 large rotations (HyReg). Each suite writes
``<out>/registration_s<N>_<name>[_quick].md`` and ``.json`` with the machine, versions, date and command.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import REPO, SHARED_DATA, WORK, machine_info, write_results  # noqa: E402

SUITES = {
    1: ("brain-mr", "bench.registration.suite_brain"),
    2: ("prostate-mr-us", "bench.registration.suite_prostate"),
    3: ("lung-vessels", "bench.registration.suite_lung"),
    4: ("known-transforms", "bench.registration.suite_known"),
    5: ("multimodal", "bench.registration.suite_multimodal"),
    6: ("scaling", "bench.registration.suite_scaling"),
    7: ("large-rotations", "bench.registration.suite_rotations"),
}
PEERS = ("regseg", "ants", "elastix")


def parse_suites(text: str) -> list[int]:
    if text.strip().lower() == "all":
        return sorted(SUITES)
    try:
        chosen = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--suites takes 'all' or numbers like 1,2,3, got {text!r}") from None
    unknown = [s for s in chosen if s not in SUITES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown suite(s) {unknown}; choose from {sorted(SUITES)}")
    return chosen


def parse_peers(text: str) -> list[str]:
    chosen = [v.strip().lower() for v in text.split(",") if v.strip()]
    unknown = [p for p in chosen if p not in PEERS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"unknown method(s) {unknown}; choose from {', '.join(PEERS)}")
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", type=parse_suites, default=sorted(SUITES), help="'all' or a list like 1,2,6")
    parser.add_argument("--peers", type=parse_peers, default=list(PEERS), help="methods to run: regseg,ants,elastix")
    parser.add_argument("--quick", action="store_true", help="a small subset of every suite (minutes)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="results folder")
    parser.add_argument("--work", type=Path, default=WORK, help="folder for prepared inputs and job outputs")
    parser.add_argument("--threads", type=int, default=2, help="threads of every process (torch, BLAS, ITK)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="time limit of one job in seconds")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="RegSeg --device (auto: no option, as a user types it); the peers run on the CPU",
    )
    parser.add_argument("--cases", type=int, default=None, help="cap on the cases of suites 2 and 3")
    parser.add_argument("--peer-cases", type=int, default=None, help="cap on the lung pairs the peers run (suite 3)")
    parser.add_argument("--keep", action="store_true", help="keep every job's folder (outputs, log) under --work")
    parser.add_argument(
        "--repeats", type=int, default=3,
        help="alternating extra runs of each method's deformable defaults for the paired time ratio (suite 1, 2 mm; 0: none)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 0:
        parser.error(f"--repeats must be 0 or more, got {args.repeats}")
    if not SHARED_DATA.is_dir():
        print(f"{SHARED_DATA}: data folder not found; the benchmark needs ../shared/data", file=sys.stderr)
        return 2
    import importlib

    import torch

    from bench.registration.harness import Context

    torch.set_num_threads(args.threads)
    ctx = Context(
        peers=args.peers, quick=args.quick, threads=args.threads, work=args.work.resolve(), timeout_s=args.timeout,
        device=args.device, keep=args.keep, cases=args.cases, peer_cases=args.peer_cases,
        repeats=0 if args.quick else args.repeats,
    )
    for number in args.suites:
        name, module_name = SUITES[number]
        if number == 6:
            name = f"scaling-{'cuda' if ctx.regseg_on_gpu else 'cpu'}"
        machine = machine_info(args.threads)
        start = time.perf_counter()
        body, payload = importlib.import_module(module_name).run(ctx)
        payload["suite_seconds"] = time.perf_counter() - start
        payload["peers"] = args.peers
        payload["quick"] = args.quick
        payload["device"] = args.device
        stem = f"registration_s{number}_{name}" + ("_quick" if args.quick else "")
        body += f"\nSuite wall time: {payload['suite_seconds'] / 60:.1f} min.\n"
        md_path, _ = write_results(
            args.out, stem, f"Registration benchmark, suite {number}: {name}", machine, body, payload
        )
        print(f"suite {number} ({name}) written to {md_path} in {payload['suite_seconds'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
