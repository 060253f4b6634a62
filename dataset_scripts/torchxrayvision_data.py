"""Public tables and reports that ship inside the `torchxrayvision` wheel, fetched from the package registry at run time.

Their licences do not let this repository redistribute them (the Indiana University reports are CC BY-NC-ND 4.0;
the CheXpert, RSNA and NIH tables come under their datasets' terms), but `pip download` can fetch the wheel that
carries them. The wheel is downloaded once (without its dependencies) into a cache folder and the requested member
is extracted beside it:

    archive = fetch_torchxrayvision_file("NLMCXR_reports.tgz")
    reports = read_indiana_reports(archive)             # FINDINGS + IMPRESSION of 3,955 real reports

The cache is `$ALTA_CACHE_DIR` or `~/.cache/alta-hf`. Tests and benchmarks that need these files skip, or fall back,
when the registry cannot be reached (`TorchXRayVisionUnavailable` says why).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ElementTree
import zipfile
from pathlib import Path

__all__ = ["TORCHXRAYVISION_VERSION", "TorchXRayVisionUnavailable", "cache_dir", "fetch_torchxrayvision_file",
           "read_indiana_reports"]

TORCHXRAYVISION_VERSION = "1.5.7"
_DOWNLOAD_TIMEOUT_S = 300


class TorchXRayVisionUnavailable(RuntimeError):
    """The torchxrayvision wheel could not be downloaded or does not hold the requested file."""


def cache_dir() -> Path:
    return Path(os.environ.get("ALTA_CACHE_DIR") or Path.home() / ".cache" / "alta-hf")


def _wheel(folder: Path) -> Path:
    pattern = f"torchxrayvision-{TORCHXRAYVISION_VERSION}-*.whl"
    found = sorted(folder.glob(pattern))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", str(folder), f"torchxrayvision=={TORCHXRAYVISION_VERSION}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TorchXRayVisionUnavailable(f"pip download torchxrayvision=={TORCHXRAYVISION_VERSION} failed: {error}")
    found = sorted(folder.glob(pattern))
    if result.returncode != 0 or not found:
        reason = (result.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise TorchXRayVisionUnavailable(
            f"pip download torchxrayvision=={TORCHXRAYVISION_VERSION} failed (is the package registry reachable?): "
            f"{reason}"
        )
    return found[0]


def fetch_torchxrayvision_file(name: str, folder: os.PathLike | str | None = None) -> Path:
    """Path of `torchxrayvision/data/<name>` from the cached wheel, downloading and extracting it when needed."""
    folder = Path(folder) if folder is not None else cache_dir() / f"torchxrayvision-{TORCHXRAYVISION_VERSION}"
    target = folder / "data" / name
    if target.is_file():
        return target
    wheel = _wheel(folder)
    member = f"torchxrayvision/data/{name}"
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise TorchXRayVisionUnavailable(f"{wheel.name} has no {member}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(archive.read(member))
        partial.replace(target)  # a killed extraction never leaves a truncated file under the final name
    return target


def read_indiana_reports(archive: os.PathLike | str, sections=("FINDINGS", "IMPRESSION")) -> list[str]:
    """The given sections of every report in `NLMCXR_reports.tgz`, joined by a space; reports without them are left out."""
    reports = []
    with tarfile.open(archive) as members:
        for member in members:
            if not member.name.endswith(".xml"):
                continue
            root = ElementTree.parse(members.extractfile(member)).getroot()
            found = {node.get("Label"): (node.text or "").strip() for node in root.iter("AbstractText")}
            text = " ".join(found[label] for label in sections if found.get(label)).strip()
            if text:
                reports.append(text)
    return reports
