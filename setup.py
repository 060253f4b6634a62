"""Installable package for alta-hf: `pip install -e .` (install `torch==2.13.0` first on CPU machines)."""

from setuptools import find_packages, setup

setup(
    name="alta-hf",
    version="0.1.0",
    description="ALTA (ALign Through Adapting): Hugging Face-native chest X-ray / report alignment with adapters",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_alta", "processing", "dataset_scripts", "training", "evaluation",
                                    "dataset_scripts.*", "training.*", "evaluation.*"]),
    py_modules=["train", "eval"],
    include_package_data=True,
    package_data={"": ["*.json", "*.txt", "*.md"]},
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
