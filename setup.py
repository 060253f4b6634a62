"""Installable package for alta-hf: `pip install -e .` (install `torch==2.13.0` first on CPU machines).

Everything installs under the one name `alta_hf` (docs/design.md, "Installed layout"): the repository keeps the
design card's folders at the top (`modeling_alta/`, `processing/`, `dataset_scripts/`, `training/`, `evaluation/`),
and they are mapped to `alta_hf.<folder>`, so no generic top-level module lands in site-packages. The command-line
tools are console scripts (`alta-train`, `alta-eval`, ...; the table is `alta_hf/cli.py`).
"""

import runpy
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
FOLDERS = ("modeling_alta", "processing", "dataset_scripts", "training", "evaluation")


def _packages() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = ["alta_hf"], {"alta_hf": "alta_hf"}
    for folder in FOLDERS:
        package_dir[f"alta_hf.{folder}"] = folder
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            packages.append(".".join(("alta_hf", *init.parent.relative_to(ROOT).parts)))
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()
COMMANDS = runpy.run_path(str(ROOT / "alta_hf" / "cli.py"))["COMMANDS"]

setup(
    name="alta-hf",
    version="0.1.0",
    description="ALTA (ALign Through Adapting): Hugging Face-native chest X-ray / report alignment with adapters",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    include_package_data=True,
    package_data={"": ["*.json", "*.txt", "*.md"]},
    entry_points={"console_scripts": [f"{name} = alta_hf.cli:{name.replace('-', '_')}" for name in COMMANDS]},

    install_requires=[
        # A bare `torch` pulls a multi-GB CUDA build on a CPU-only machine: install the pin first (see README).
        "torch>=2.4",
        "transformers>=5.24,<5.25",  # 5.25 loads processors through the Auto classes (asks for trust_remote_code)
        "peft>=0.21.2",
        "accelerate>=1.15",
        "datasets>=5.2",
        "evaluate>=0.4.6",
        "huggingface_hub>=2.4",
        "safetensors>=0.4",
        "tokenizers>=0.21",
        "numpy>=1.26",
        "pillow>=10",
        "pydicom>=3.0",
        "scikit-learn>=1.4",
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "pyyaml>=6",
        "tensorboard>=2.16",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3"]},
)
