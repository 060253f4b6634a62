"""Shared fixtures. Everything the tests read lives in `tests/fixtures/` (see its README.md); the Indiana University
reports, whose licence forbids redistribution, are fetched from the package registry at test time."""

from pathlib import Path

import os

import pytest
import torch

# A fast tokenizer used in the test process starts Rust worker threads; the spawned gloo ranks of a later test then
# hung until their timeout (reproduced: the whole-report masking test followed by tests/test_losses_distributed.py).
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
from safetensors.torch import load_file

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
GOLDEN_DIR = FIXTURES_DIR / "golden_tiny"
REALDATA_DIR = FIXTURES_DIR / "realdata"


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same seed and the same thread count, so values (not only shapes) are stable."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The official code's outputs at tiny geometry (tests/fixtures/README.md)."""
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_tensors(golden_dir) -> dict[str, dict[str, torch.Tensor]]:
    """The recorded "inputs", "outputs" and "grads". Each kind is `<kind>.safetensors` plus the `<kind>_*.safetensors`
    parts that its largest tensors are split into, so that no fixture file exceeds ~10 MB."""
    recorded = {}
    for kind in ("inputs", "outputs", "grads"):
        recorded[kind] = {}
        for path in sorted(golden_dir.glob(f"{kind}*.safetensors")):
            recorded[kind].update(load_file(path))
    return recorded


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """Real radiographs and DICOMs (tests/fixtures/SOURCES.md gives each file's origin and licence)."""
    return REALDATA_DIR


@pytest.fixture(scope="session")
def indiana_reports() -> list[str]:
    """FINDINGS + IMPRESSION of the 3,9xx Indiana University reports, from the torchxrayvision wheel (CC BY-NC-ND)."""
    from alta_hf.dataset_scripts.torchxrayvision_data import (
        TorchXRayVisionUnavailable,
        fetch_torchxrayvision_file,
        read_indiana_reports,
    )

    try:
        archive = fetch_torchxrayvision_file("NLMCXR_reports.tgz")
    except TorchXRayVisionUnavailable as error:
        pytest.skip(f"the Indiana University reports are fetched from the package registry at test time: {error}")
    return read_indiana_reports(archive)


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """Demo data of the tiny training setup (tests/training_setup.py): 48 pre-training studies, built once."""
    from tests.training_setup import build_tiny_demo

    return build_tiny_demo(tmp_path_factory.mktemp("tiny_demo") / "demo")


@pytest.fixture
def processing_stand_ins(monkeypatch):
    """The evaluation tests' stand-ins for the processing package (tests/eval_stand_ins.py)."""
    from tests.eval_stand_ins import install_processing_stand_ins

    install_processing_stand_ins(monkeypatch)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    """A tiny CLIP-like model folder with its processor (tests/eval_stand_ins.py)."""
    from tests.eval_stand_ins import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "model")
