"""Prepare speed and memory: one JSON line per case (seconds, peak resident memory).

    .venv/bin/python benchmarks/prepare.py [--cases kuairand,synthetic-1m,synthetic-10m]
                                           [--data-dir DIR] [--work DIR]

Cases:
- kuairand: `prepare_kuairand(data_dir, out)` on the KuaiRand-Pure folder (INFNET_DATA_DIR
  or ../shared/data/kuairand-pure); skipped, with the reason, when the data is missing.
- synthetic-1m: the simulator, 1M rows, 20k users, 10k items (50 rows per user).
- synthetic-10m: the simulator, 10M rows, 100k users, 20k items (100 rows per user),
  generated in Parquet parts of 1M rows and prepared from a lazy scan.

Each case runs in its own process; its peak RSS comes from os.wait4 on that process, so
cases do not pollute each other. For the simulator the child also reports how long the
generation and the prepare took and the peak RSS at the end of the generation (VmHWM), so
the two stages' memory can be told apart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("INFNET_DATA_DIR", REPO.parent / "shared/data/kuairand-pure"))
SYNTHETIC = {  # case -> (rows, users, items)
    "synthetic-1m": (1_000_000, 20_000, 10_000),
    "synthetic-10m": (10_000_000, 100_000, 20_000),
}
CASES = ("kuairand", *SYNTHETIC)


def _vm_hwm_mib() -> float:
    """Peak resident memory of this process so far (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: str, data_dir: Path, work: Path) -> dict:
    """The body of one case, run inside the child process."""
    out = work / "out"
    if case == "kuairand":
        from infnet.data.sources.kuairand import prepare_kuairand

        stats = prepare_kuairand(data_dir, out, progress=False)
        return {"rows": sum(stats["rows"].values()), "prepare_seconds": stats["seconds"]}
    from infnet.data.prepare import prepare
    from infnet.data.sources.synthetic import build_raw

    rows, users, items = SYNTHETIC[case]
    t0 = time.perf_counter()
    raw = build_raw(rows, users, items, seed=0, workdir=work / "parts")
    generated = time.perf_counter() - t0
    generate_peak = _vm_hwm_mib()
    stats = prepare(raw, out, progress=False)
    return {
        "rows": rows,
        "users": users,
        "items": items,
        "generate_seconds": round(generated, 2),
        "generate_peak_rss_mib": round(generate_peak, 1),
        "prepare_seconds": stats["seconds"],
        "oracle_auc_test": stats.get("oracle_auc", {}).get("test"),
    }


def measure(case: str, data_dir: Path, work_root: Path | None) -> dict:
    """Run one case in a child process; wall seconds and its own peak RSS."""
    if case == "kuairand" and not (data_dir / "user_features_pure.csv").is_file():
        return {
            "case": case,
            "skipped": f"KuaiRand-Pure data not found at {data_dir} (set INFNET_DATA_DIR)",
        }
    work = Path(tempfile.mkdtemp(prefix=f"bench-prepare-{case}-", dir=work_root))
    try:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            case,
            "--data-dir",
            str(data_dir),
            "--work",
            str(work),
        ]
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        result = {
            "case": case,
            "seconds": round(seconds, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        }
        if code != 0:
            return result | {"error": f"exit code {code}"}
        return result | json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cases", default=",".join(CASES), help=f"comma-separated, among {', '.join(CASES)}"
    )
    ap.add_argument("--data-dir", type=Path, default=DATA_DIR, help="KuaiRand-Pure folder")
    ap.add_argument(
        "--work", type=Path, default=None, help="scratch folder (default: the system temp)"
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.data_dir, args.work)))
        return
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case {unknown[0]!r} (cases: {', '.join(CASES)})")
    for case in cases:
        print(json.dumps(measure(case, args.data_dir, args.work)), flush=True)


if __name__ == "__main__":
    main()
