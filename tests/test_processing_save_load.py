"""Processor save/load: in-process, through AutoProcessor remote code in a fresh interpreter, and from a model folder."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import BertTokenizer

from alta_hf.processing import AltaImageProcessor, AltaProcessor, load_processor

NIH_PNG = "images/nih_cxr14/00000001_000.png"
REPORT = "Mild cardiomegaly. No pneumothorax. Small left pleural effusion."


def _processor(golden_dir, **kwargs):
    tokenizer = BertTokenizer(vocab=str(golden_dir / "BiomedVLP-CXR-BERT-specialized" / "vocab.txt"), model_max_length=128)
    image_processor = AltaImageProcessor(size={"shortest_edge": 128}, crop_size={"height": 112, "width": 112},
                                         reconstruction_size=256, reconstruction_crop_size=224, augment_degrees=5.0)
    return AltaProcessor(image_processor, tokenizer, **kwargs)


def _sample(processor, realdata_dir):
    inference = processor(images=str(realdata_dir / NIH_PNG), text=REPORT)
    study = processor.preprocess_study(realdata_dir / NIH_PNG, report=REPORT, generator=torch.Generator().manual_seed(1))
    return {**{f"inference_{k}": v for k, v in inference.items()}, **study}


def test_round_trip_in_process(golden_dir, realdata_dir, tmp_path):
    processor = _processor(golden_dir, mlm_strategy="bert", max_length=64)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_alta.AltaProcessor"
    assert config["image_processor"]["reconstruction_crop_size"] == 224 and config["mlm_strategy"] == "bert"
    loaded = AltaProcessor.from_pretrained(tmp_path)
    assert loaded.max_length == 64 and loaded.image_processor.augment_degrees == 5.0
    expected, actual = _sample(processor, realdata_dir), _sample(loaded, realdata_dir)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_auto_processor_remote_code_in_a_fresh_interpreter(golden_dir, realdata_dir, tmp_path):
    """The saved folder is all a user needs: the repository's packages are blocked in the subprocess."""
    folder = tmp_path / "saved"
    processor = _processor(golden_dir)
    processor.save_pretrained(folder)
    expected = _sample(processor, realdata_dir)
    torch.save(expected, tmp_path / "expected.pt")
    script = f"""
import sys, torch
assert not any(name in sys.modules for name in ("processing", "modeling_alta"))
# An editable install (as in CI) keeps the repository importable; block its packages so that only the
# remote-code copy can serve the processor.
for name in ("processing", "modeling_alta"):
    sys.modules[name] = None
from transformers import AutoProcessor
processor = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
assert type(processor).__name__ == "AltaProcessor" and type(processor).__module__.startswith("transformers_modules")
inference = processor(images={str(realdata_dir / NIH_PNG)!r}, text={REPORT!r})
study = processor.preprocess_study({str(realdata_dir / NIH_PNG)!r}, report={REPORT!r},
                                   generator=torch.Generator().manual_seed(1))
actual = {{**{{f"inference_{{k}}": v for k, v in inference.items()}}, **study}}
expected = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
assert actual.keys() == expected.keys(), (actual.keys(), expected.keys())
bad = [key for key in expected if not torch.equal(expected[key], actual[key])]
assert not bad, bad
print("OK")
"""
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("OK"), result.stderr[-3000:]


def test_load_processor_from_a_converted_checkpoint_folder(golden_dir, realdata_dir, tmp_path):
    """A folder with only the tokenizer's vocab.txt gets the default image processor."""
    shutil.copy(golden_dir / "BiomedVLP-CXR-BERT-specialized" / "vocab.txt", tmp_path / "vocab.txt")
    processor = load_processor(tmp_path)
    assert processor.image_processor.crop_size.height == 224 and len(processor.tokenizer) == 200
    inputs = processor(images=str(realdata_dir / NIH_PNG), text="pleural effusion")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 224, 224)
    saved = tmp_path / "with_processor"
    _processor(golden_dir).save_pretrained(saved)
    assert load_processor(saved).image_processor.crop_size.height == 112


def test_the_view_slots_are_fixed_and_only_torch_or_numpy_tensors_are_returned(realdata_dir, tmp_path):
    processor = AltaImageProcessor()
    assert processor.num_view_slots == 4 and "num_view_slots" not in processor.to_dict()
    assert AltaImageProcessor(num_view_slots=4).num_view_slots == 4  # what earlier versions saved
    with pytest.raises(ValueError, match="fills exactly 4 view slots"):
        AltaImageProcessor(num_view_slots=2)
    image = str(realdata_dir / NIH_PNG)
    assert isinstance(processor.preprocess(image, return_tensors="np")["pixel_values"], np.ndarray)
    assert isinstance(processor.preprocess(image)["pixel_values"], torch.Tensor)
    with pytest.raises(ValueError, match=r"return_tensors must be one of \('pt', 'np', None\), got 'tf'"):
        processor.preprocess(image, return_tensors="tf")
