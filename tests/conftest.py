"""Shared fixtures. `shared/` (golden outputs, real radiographs, specs) sits beside the repository."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("ALTA_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same seed and the same thread count, so values (not only shapes) are stable."""
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared/ not found at {SHARED_DIR}; set ALTA_SHARED_DIR to the folder with golden/ and realdata/")
    return SHARED_DIR


@pytest.fixture(scope="session")
def golden_dir(shared_dir) -> Path:
    return shared_dir / "golden" / "tiny"


@pytest.fixture(scope="session")
def realdata_dir(shared_dir) -> Path:
    return shared_dir / "realdata"
