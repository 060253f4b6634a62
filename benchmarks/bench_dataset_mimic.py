"""Benchmark: the MIMIC-CXR pre-training builder on generated full-size inputs, and how its time scales.

    python -m benchmarks.bench_dataset_mimic [--scales 0.1 0.5 1.0] [--repeats 2] [--work-dir DIR] [--compare-readers]

For each scale it generates synthetic MIMIC-CXR-JPG tables (`.csv.gz`, the real headers and quirks)
and a `mimic-cxr-reports.zip` with one report per study, scaled from the real sizes (377,110 images,
227,835 studies, 65,379 subjects at 1.0). Each build runs in a fresh Python process (so its peak RSS is
its own) and does exactly what `python -m alta_hf.dataset_scripts.mimic_cxr` does: build, then `save_to_disk`
with the json files. Goal at 1.0: < 60 s and < 4 GB peak; time should grow linearly with size.
Wall time depends on what else runs on the machine; CPU time (all threads of the process) is the
steadier measure of the work, so the linearity column uses it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL = {"n_subjects": 65_379, "n_studies": 227_835, "n_images": 377_110}


def child(root: str, reports: str, output: str) -> None:
    """Runs in the subprocess: one timed build + save, result as one JSON line on stdout."""
    start = time.perf_counter()
    from alta_hf.dataset_scripts.common import save_dataset
    from alta_hf.dataset_scripts.mimic_cxr import build_mimic_cxr

    imported, cpu_imported = time.perf_counter(), time.process_time()
    dataset, meta, summary = build_mimic_cxr(root, reports)
    built = time.perf_counter()
    save_dataset(dataset, output, meta, summary)
    saved, cpu_saved = time.perf_counter(), time.process_time()
    print(json.dumps({
        "import_s": imported - start, "build_s": built - imported, "save_s": saved - built,
        "total_s": saved - start, "work_cpu_s": cpu_saved - cpu_imported,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "rows": summary["rows"],
    }))


def compare_readers(folder: Path) -> None:
    """The two speed choices of the builder, side by side on the same inputs: CSV engine and zip member reading."""
    import re

    import pandas as pd

    from alta_hf.dataset_scripts.mimic_reports import MimicReports

    metadata = folder / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz"
    for engine in ("c", "pyarrow"):
        start = time.perf_counter()
        pd.read_csv(metadata, dtype=str, engine=engine)
        print(f"metadata CSV, pandas {engine} engine: {time.perf_counter() - start:.2f} s", flush=True)
    archive = folder / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(archive) as plain:
        names = plain.namelist()
        start = time.perf_counter()
        for name in names:
            plain.read(name)
        print(f"{len(names):,} reports via ZipFile.read: {time.perf_counter() - start:.2f} s", flush=True)
    keys = [tuple(map(int, re.search(r"p(\d+)/s(\d+)\.txt$", name).groups())) for name in names]
    with MimicReports(archive) as reports:
        start = time.perf_counter()
        for subject, study in keys:
            reports.read(subject, study)
        print(f"{len(keys):,} reports via MimicReports.read (memory-mapped): {time.perf_counter() - start:.2f} s", flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    parser.add_argument("--repeats", type=int, default=2, help="builds per scale; the fastest is reported")
    parser.add_argument("--work-dir", help="keep generated inputs here (reused when present) instead of a temp dir")
    parser.add_argument("--compare-readers", action="store_true",
                        help="also time the CSV engines and the zip readers on the largest scale's inputs")
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "REPORTS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from devtools.mimic_fixtures import write_synthetic_mimic

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="bench_mimic_"))
    results = []
    try:
        inputs = {}
        for scale in args.scales:
            folder = work / f"scale_{scale:g}"
            sizes = {k: max(1, round(v * scale)) for k, v in FULL.items()}
            if not (folder / "mimic-cxr-reports.zip").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                start = time.perf_counter()
                write_synthetic_mimic(folder, **sizes, seed=0, compress=True)
                print(f"generated scale {scale:g} in {time.perf_counter() - start:.0f} s", flush=True)
            with zipfile.ZipFile(folder / "mimic-cxr-reports.zip") as archive:
                sizes["mean_report_bytes"] = round(sum(i.file_size for i in archive.infolist()) / sizes["n_studies"])
            sizes["reports_zip_mb"] = round((folder / "mimic-cxr-reports.zip").stat().st_size / 1e6, 1)
            inputs[scale] = (folder, sizes)
        for _ in range(args.repeats):  # interleave the scales so that machine noise hits all of them alike
            for scale in args.scales:
                folder, sizes = inputs[scale]
                out = folder / "out"
                command = [sys.executable, "-m", "benchmarks.bench_dataset_mimic", "--child", str(folder / "mimic-cxr-jpg"),
                           str(folder / "mimic-cxr-reports.zip"), str(out)]
                completed = subprocess.run(command, check=True, cwd=REPO, capture_output=True, text=True)
                record = json.loads(completed.stdout.strip().splitlines()[-1])
                results.append({"scale": scale, **sizes, **record})
                shutil.rmtree(out, ignore_errors=True)
                print(f"scale {scale:g}: build {record['build_s']:.1f} s, save {record['save_s']:.1f} s, "
                      f"total {record['total_s']:.1f} s, build+save CPU {record['work_cpu_s']:.1f} s, "
                      f"peak {record['peak_rss_gb']:.2f} GB, load {os.getloadavg()[0]:.1f}", flush=True)
        if args.compare_readers:
            compare_readers(inputs[max(args.scales)][0])
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)

    best = {s: min((r for r in results if r["scale"] == s), key=lambda r: r["total_s"]) for s in args.scales}
    reference = best[max(args.scales)]
    print(f"\nCPU: {cpu_name()} ({os.cpu_count()} logical cores); fastest of {args.repeats} per scale")
    print("| scale | images | studies | subjects | rows written | build s | save s | total s (incl. imports) "
          "| build+save CPU s | CPU s per 10k studies | vs largest | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for scale in args.scales:
        r = best[scale]
        per_study = r["work_cpu_s"] / r["n_studies"]
        ratio = per_study / (reference["work_cpu_s"] / reference["n_studies"])
        print(f"| {scale:g} | {r['n_images']:,} | {r['n_studies']:,} | {r['n_subjects']:,} | {sum(r['rows'].values()):,} "
              f"| {r['build_s']:.1f} | {r['save_s']:.1f} | {r['total_s']:.1f} | {r['work_cpu_s']:.1f} | {1e4 * per_study:.2f} "
              f"| {ratio:.2f} | {r['peak_rss_gb']:.2f} |")
    print(f"reports: mean {reference['mean_report_bytes']} bytes, zip {reference['reports_zip_mb']} MB at the largest scale")


if __name__ == "__main__":
    main()
