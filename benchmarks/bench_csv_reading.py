"""What the line accounting of `read_csv_columns` costs on the largest table a builder reads.

    python -m benchmarks.bench_csv_reading [--work-dir DIR] [--rounds 5]

The full-size synthetic `mimic-cxr-2.0.0-metadata.csv.gz` (377,110 rows, generated once into the work dir) is read
by plain `pandas.read_csv(engine="pyarrow")` and by `read_csv_columns(..., engine="pyarrow")`, which decompresses the
file itself, counts its lines (the check that catches rows lost to a stray quote) and parses the bytes from memory.
The rounds alternate the two; the best wall and CPU time of each are shown (CPU time covers all threads).
"""

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from alta_hf.dataset_scripts.common import read_csv_columns
from alta_hf.dataset_scripts.mimic_tables import METADATA_COLUMNS
from devtools.mimic_fixtures import write_synthetic_mimic


def timed(function) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", help="keep the generated table here (reused when present)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_csv_"))
    metadata = folder / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv.gz"
    if not metadata.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_synthetic_mimic(folder, seed=0, compress=True, with_reports=False)
    readers = {
        "pandas.read_csv, pyarrow engine": lambda: pd.read_csv(metadata, dtype=str, engine="pyarrow"),
        "read_csv_columns, pyarrow engine + line accounting": lambda: read_csv_columns(
            metadata, METADATA_COLUMNS, engine="pyarrow"),
    }
    times = {name: [] for name in readers}
    for _ in range(args.rounds):
        for name, read in readers.items():
            times[name].append(timed(read))
    for name, values in times.items():
        print(f"{name}: best wall {min(w for w, _ in values):.2f} s, best CPU {min(c for _, c in values):.2f} s")


if __name__ == "__main__":
    main()
