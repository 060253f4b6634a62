"""The README's Python code runs as written: every ```python block of README.md is executed, in order, in a folder
where its paths exist (a tiny saved ALTA model at `outputs/demo/model`, real radiographs as `cxr.dcm` / `cxr.jpg`),
and the values it produces are checked against the model's own computation."""

import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.factories import save_tiny_alta_folder

README = Path(__file__).resolve().parents[1] / "README.md"
DICOM = "dicom/siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
JPEG = "derived/rg1_mimic_cxr_jpg_style.jpg"


def readme_python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


def _tensor(value):
    """The bare projected features, whichever convention `get_image_features` follows."""
    return value if isinstance(value, torch.Tensor) else value.pooler_output


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory, golden_dir, realdata_dir):
    folder = tmp_path_factory.mktemp("readme")
    save_tiny_alta_folder(folder / "outputs" / "demo" / "model", golden_dir / "BiomedVLP-CXR-BERT-specialized")
    shutil.copy(realdata_dir / DICOM, folder / "cxr.dcm")
    shutil.copy(realdata_dir / JPEG, folder / "cxr.jpg")
    blocks = readme_python_blocks()
    namespace = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace, blocks


def test_readme_has_python_examples(readme_run):
    _, blocks = readme_run
    assert blocks, "README.md has no ```python block"


def test_embeddings_and_logits_are_the_models(readme_run):
    namespace = readme_run[0]
    model, inputs, outputs = namespace["model"], namespace["inputs"], namespace["outputs"]
    assert inputs["pixel_values"].shape[0] == 2 and inputs["input_ids"].shape[0] == 2
    with torch.no_grad():
        image = F.normalize(_tensor(model.get_image_features(inputs["pixel_values"])), dim=-1)
        text = F.normalize(_tensor(model.get_text_features(inputs["input_ids"], inputs["attention_mask"])), dim=-1)
    torch.testing.assert_close(outputs.logits_per_image, model.logit_scale.exp() * image @ text.T)
    torch.testing.assert_close(outputs.logits_per_text, outputs.logits_per_image.T)
    features = _tensor(namespace["image_features"])
    assert features.shape == (2, model.config.projection_dim)
    torch.testing.assert_close(F.normalize(features, dim=-1), image)


def test_zero_shot_pipeline_ranks_labels_by_the_models_scores(readme_run, realdata_dir):
    namespace = readme_run[0]
    model, processor, predictions = namespace["model"], namespace["processor"], namespace["predictions"]
    labels = ["pleural effusion", "cardiomegaly", "no finding"]
    assert sorted(item["label"] for item in predictions) == sorted(labels)
    scores = [item["score"] for item in predictions]
    assert scores == sorted(scores, reverse=True)
    with torch.no_grad():
        inputs = processor(images=[str(realdata_dir / DICOM)], text=labels, padding=True)
        expected = model(**inputs).logits_per_image.softmax(dim=-1)[0]
    by_label = {item["label"]: item["score"] for item in predictions}
    assert [by_label[label] for label in labels] == pytest.approx(expected.tolist(), abs=1e-5)


def test_classification_head_keeps_the_image_tower(readme_run):
    namespace = readme_run[0]
    head, model, logits = namespace["head"], namespace["model"], namespace["logits"]
    assert logits.shape == (1, 5) and head.config.num_labels == 5
    ours = dict(head.named_parameters())
    tower = {name: p for name, p in model.named_parameters() if name.startswith("vision_model.")}
    shared = [name for name in tower if name in ours]
    assert shared and all(torch.equal(ours[name], tower[name]) for name in shared)
