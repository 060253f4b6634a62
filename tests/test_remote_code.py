"""A saved folder loads with `trust_remote_code=True` in a fresh Python where this repository is not importable."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

from alta_hf.modeling_alta import AltaForPreTraining
from tests.factories import perturb_parameters_, tiny_alta_config

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs with `python -I` (no PYTHONPATH, no user site, no script/cwd entry) from a directory outside the repository;
# an editable install of the repository would still be importable, so its packages are blocked explicitly.
_CHILD = textwrap.dedent(
    """
    import json, os, sys
    for name in ("modeling_alta", "processing"):
        sys.modules[name] = None  # any import of the repository's packages raises ImportError
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

    folder = sys.argv[1]
    inputs = load_file(folder + "/../inputs.safetensors")
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    pretraining = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"]).pooler_output
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        image_pretraining = pretraining.alta.get_image_features(inputs["pixel_values"]).pooler_output
    expected = load_file(folder + "/../expected.safetensors")
    print(json.dumps({
        "config": type(config).__module__,
        "model": type(model).__module__ + "." + type(model).__name__,
        "pretraining": type(pretraining).__module__ + "." + type(pretraining).__name__,
        "image": torch.equal(image, expected["image"]),
        "text": torch.equal(text, expected["text"]),
        "image_pretraining": torch.equal(image_pretraining, expected["image"]),
        "trainable": list(pretraining.trainable_parameter_counts()),
        # nothing was imported from the repository (a virtual environment inside it, CI's .venv, is not the repository)
        "repo_modules": sorted(name for name, module in list(sys.modules.items())
                               if (getattr(module, "__file__", None) or "").startswith(sys.argv[2])
                               and not module.__file__.startswith(sys.prefix)),
    }))
    """
)


def test_saved_folder_loads_as_remote_code_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    model = perturb_parameters_(AltaForPreTraining(tiny_alta_config())).eval()
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    assert {"configuration_alta.py", "modeling_alta.py", "adapters_alta.py", "losses_alta.py"} <= set(os.listdir(saved))
    assert json.loads((saved / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_alta.AltaConfig",
        "AutoModel": "modeling_alta.AltaModel",
        "AutoModelForPreTraining": "modeling_alta.AltaForPreTraining",
        "AutoModelForImageClassification": "classification_alta.AltaForImageClassification",
    }

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(saved, elsewhere / "alta-tiny")
    generator = torch.Generator().manual_seed(4)
    inputs = {
        "pixel_values": torch.randn(2, 3, 224, 224, generator=generator),
        "input_ids": torch.randint(5, 200, (2, 10), generator=generator),
        "attention_mask": torch.ones(2, 10, dtype=torch.long),
    }
    with torch.no_grad():
        expected = {
            "image": model.alta.get_image_features(inputs["pixel_values"]).pooler_output,
            "text": model.alta.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output,
        }
    save_file(inputs, elsewhere / "inputs.safetensors")
    save_file(expected, elsewhere / "expected.safetensors")

    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", _CHILD, str(elsewhere / "alta-tiny"), str(REPO_ROOT)],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["config"].startswith("transformers_modules.")
    assert report["model"].startswith("transformers_modules.") and report["model"].endswith(".AltaModel")
    assert report["pretraining"].endswith(".AltaForPreTraining")
    assert report["image"] and report["text"] and report["image_pretraining"]
    assert report["trainable"] == list(model.trainable_parameter_counts())
    assert report["repo_modules"] == []
