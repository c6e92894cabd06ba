"""How long `wsss report` takes and how big the page is, on an existing workspace (read-only:
the page is written outside it). Prints and saves benchmarks/results/report.json.

    python benchmarks/report.py WORKSPACE [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from wsss_core.report import ReportConfig, gather, mask_stages, write_report
from wsss_core.store import Workspace

RESULTS = Path(__file__).parent / "results" / "report.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ws = Workspace(args.workspace).require()
    seconds, sizes = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.repeats):
            started = time.perf_counter()
            page = write_report(ws.path, Path(out) / "report.html", ReportConfig())
            seconds.append(time.perf_counter() - started)
            sizes.append(page.stat().st_size)
    report = gather(ws, ReportConfig(mlflow=False))
    result = {
        "workspace": str(ws.path), "images": len(ws.image_ids()), "mask_sets": len(mask_stages(ws)),
        "overlay_rows": len(report.sample) + len(report.worst), "repeats": args.repeats,
        "seconds_median": round(statistics.median(seconds), 2), "seconds": [round(s, 2) for s in seconds],
        "page_mb_median": round(statistics.median(sizes) / 2**20, 2),
    }
    print(json.dumps(result, indent=1))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
