"""The converter's output folder works at once: the golden checkpoint converted in one command gives a folder that
`pipeline("zero-shot-image-classification")` and `AutoProcessor` use straight away on a real radiograph, and that
loads by repo id from a Hugging Face cache with `HF_HUB_OFFLINE=1` in a fresh interpreter (repository blocked)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, pipeline

from alta_hf.modeling_alta.convert_original_alta import build_tokenizer, convert_checkpoint
from alta_hf.modeling_alta.convert_original_alta import main as convert_main
from alta_hf.processing import AltaImageProcessor, AltaProcessor, load_radiograph

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT_DIR = "BiomedVLP-CXR-BERT-specialized"
RADIOGRAPH = "images/nih_cxr14/00000001_000.png"
DICOM = "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"
LABELS = ["pleural effusion", "no acute cardiopulmonary process", "cardiomegaly"]
REPO_ID = "someone/alta-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
HEADS = {"vision_num_attention_heads": 4, "decoder_num_attention_heads": 3}

_CHILD = textwrap.dedent(
    """
    import json, sys
    for name in ("modeling_alta", "processing", "evaluation", "training", "dataset_scripts"):
        sys.modules[name] = None  # any import of the repository's packages raises ImportError
    from transformers import AutoModel, AutoProcessor, pipeline

    repo_id, images, labels = sys.argv[1], sys.argv[2:4], json.loads(sys.argv[4])
    processor = AutoProcessor.from_pretrained(repo_id, trust_remote_code=True)
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    classifier = pipeline("zero-shot-image-classification", model=repo_id, trust_remote_code=True)
    print(json.dumps({
        "processor": type(processor).__module__ + "." + type(processor).__name__,
        "model": type(model).__module__ + "." + type(model).__name__,
        "scores": [{r["label"]: r["score"] for r in classifier(image, candidate_labels=labels)} for image in images],
    }))
    """
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, golden_dir):
    out = tmp_path_factory.mktemp("converted") / "alta-tiny"
    assert convert_main([
        "--checkpoint", str(golden_dir / "ALTA_random.pth"), "--text-model-dir", str(golden_dir / TEXT_DIR),
        "--output-dir", str(out), *(f"--{name.replace('_', '-')}={value}" for name, value in HEADS.items()),
    ]) == 0
    return out


@pytest.fixture(scope="module")
def reference(golden_dir):
    """The conversion in memory, with a processor built here: what the folder must reproduce."""
    model = convert_checkpoint(golden_dir / "ALTA_random.pth", golden_dir / TEXT_DIR, **HEADS).alta.eval()
    return model, AltaProcessor(AltaImageProcessor(), build_tokenizer(golden_dir / TEXT_DIR))


def _expected_scores(reference, image) -> dict[str, float]:
    model, processor = reference
    inputs = processor(images=load_radiograph(image), text=LABELS, padding="longest")
    with torch.no_grad():
        return dict(zip(LABELS, model(**inputs).logits_per_image[0].softmax(-1).tolist()))


def _assert_close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    assert all(abs(got[label] - expected[label]) < 1e-5 for label in expected), (got, expected)
    assert max(expected.values()) - min(expected.values()) > 1e-3  # the scores tell the labels apart


def test_converted_folder_is_complete(converted):
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
            "processing_alta.py", "image_processing_alta.py", "pipelines_alta.py"} <= set(os.listdir(converted))
    processor = AutoProcessor.from_pretrained(converted, trust_remote_code=True)
    assert type(processor).__name__ == "AltaProcessor"
    assert processor.max_length == 128 and processor.tokenizer.model_max_length == 128
    assert processor.image_processor.crop_size.height == 224


def test_zero_shot_pipeline_straight_from_the_converter_output(converted, reference, realdata_dir):
    classifier = pipeline("zero-shot-image-classification", model=str(converted), trust_remote_code=True)
    for image in (realdata_dir / RADIOGRAPH, realdata_dir / DICOM):
        result = classifier(str(image), candidate_labels=LABELS)
        _assert_close({r["label"]: r["score"] for r in result}, _expected_scores(reference, image))


def _hub_cache(folder: Path, cache: Path) -> None:
    """`folder` laid out as huggingface_hub caches a download of REPO_ID at COMMIT (blobs, snapshot links, ref)."""
    repo = cache / f"models--{REPO_ID.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot, blobs = repo / "snapshots" / COMMIT, repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for index, path in enumerate(sorted(folder.iterdir())):
        blob = blobs / f"{index:040x}"
        shutil.copyfile(path, blob)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))


def test_loads_by_repo_id_from_the_hub_cache_offline_in_a_fresh_interpreter(converted, reference, realdata_dir,
                                                                             tmp_path):
    cache = tmp_path / "hub"
    _hub_cache(converted, cache)
    images = [str(realdata_dir / RADIOGRAPH), str(realdata_dir / DICOM)]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", _CHILD, REPO_ID, *images, json.dumps(LABELS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["processor"].startswith("transformers_modules.") and report["processor"].endswith(".AltaProcessor")
    assert report["model"].startswith("transformers_modules.") and report["model"].endswith(".AltaModel")
    for image, scores in zip(images, report["scores"]):
        _assert_close(scores, _expected_scores(reference, image))
