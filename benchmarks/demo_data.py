"""Demo data: generation time and size at the default options, and how separable the classes are.

    python -m benchmarks.demo_data [--workers 1 2] [--probe-train-per-class 150] [--probe-test-per-class 60]

Prints, per worker count, the wall time, the CPU time (this process and its workers), the number of
images and the size on disk of a default build; then the held-out accuracy of a logistic-regression
probe on 32x32 thumbnails of the frontal images (fitted on evaluation-`validation` images, scored on
evaluation-`test` images).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


from alta_hf.dataset_scripts.demo import DemoOptions, build_demo_data, render_study
from alta_hf.dataset_scripts.demo_phantom import CLASS_NAMES


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_build(workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
        build_demo_data(Path(tmp) / "demo", DemoOptions(), num_workers=workers)
        wall, cpu = time.perf_counter() - start_wall, _cpu_seconds() - start_cpu
        images = list((Path(tmp) / "demo" / "images").rglob("*.png"))
        size = sum(f.stat().st_size for f in (Path(tmp) / "demo").rglob("*") if f.is_file())
    print(f"default build, {workers} worker(s): {wall:.1f} s wall, {cpu:.1f} s CPU, {len(images)} images, "
          f"{size / 2**20:.0f} MiB, {1000 * cpu / len(images):.1f} ms CPU per image; load average {os.getloadavg()[0]:.1f}")


def thumbnails(options: DemoOptions, split: str, count: int, side: int = 32):
    features, labels = [], []
    for index in range(count):
        spec, images = render_study(options, split, index)
        thumbnail = Image.fromarray(images["frontal"]).resize((side, side), Image.BILINEAR)
        features.append(np.asarray(thumbnail, dtype=np.float32).ravel() / 255.0)
        labels.append(CLASS_NAMES.index(spec.finding.label))
    return np.stack(features), np.array(labels)


def probe(train_per_class: int, test_per_class: int) -> None:
    train_x, train_y = thumbnails(DemoOptions(num_eval_per_class=train_per_class), "validation",
                                  train_per_class * len(CLASS_NAMES))
    test_x, test_y = thumbnails(DemoOptions(num_eval_per_class=test_per_class), "test", test_per_class * len(CLASS_NAMES))
    with threadpool_limits(1):  # BLAS threads on a busy machine make this fit 20x slower
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000)).fit(train_x, train_y)
    predicted = model.predict(test_x)
    per_class = {name: round(float((predicted[test_y == k] == k).mean()), 3) for k, name in enumerate(CLASS_NAMES)}
    print(f"linear probe on 32x32 thumbnails ({train_per_class}/class fit, {test_per_class}/class held out): "
          f"accuracy {(predicted == test_y).mean():.3f}; per class {per_class}")
    print("confusion matrix (rows = truth, in class order):")
    print(confusion_matrix(test_y, predicted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--probe-train-per-class", type=int, default=150)
    parser.add_argument("--probe-test-per-class", type=int, default=60)
    args = parser.parse_args()
    for workers in args.workers:
        time_build(workers)
    probe(args.probe_train_per_class, args.probe_test_per_class)


if __name__ == "__main__":
    main()
