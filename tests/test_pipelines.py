"""`transformers.pipeline` with an ALTA folder (remote code, no network) on real radiographs: PNG paths, PIL images and
DICOM files from tests/fixtures/realdata/; the pipelines' outputs equal the model's own computation."""

import json

import pytest
import torch
from PIL import Image
from transformers import pipeline

from alta_hf.modeling_alta import AltaForPreTraining
from alta_hf.processing import load_processor, load_radiograph
from tests.factories import save_tiny_alta_folder

LABELS = ["pleural effusion", "no acute cardiopulmonary process", "cardiomegaly"]
PNG = "images/nih_cxr14/00000001_000.png"
DICOMS = ["dicom/siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm",  # JPEG baseline, 1024 px
          "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"]  # 16-bit MONOCHROME1, 1841 x 1955


@pytest.fixture(scope="module")
def folder(tmp_path_factory, golden_dir):
    """A trained-looking tiny model saved as model + tokenizer only, completed by write_processor."""
    out = save_tiny_alta_folder(tmp_path_factory.mktemp("alta") / "alta-tiny", golden_dir / "BiomedVLP-CXR-BERT-specialized")
    assert (out / "processor_config.json").is_file()
    return out


@pytest.fixture(scope="module")
def reference(folder):
    model = AltaForPreTraining.from_pretrained(folder).alta.eval()
    return model, load_processor(folder)


def _expected_scores(reference, image):
    model, processor = reference
    inputs = processor(images=load_radiograph(image), text=LABELS, padding="longest")
    with torch.no_grad():
        return model(**inputs).logits_per_image[0].softmax(-1)


def test_config_names_the_custom_pipelines(folder):
    pipelines = json.loads((folder / "config.json").read_text())["custom_pipelines"]
    assert pipelines["zero-shot-image-classification"]["impl"] == "pipelines_alta.AltaZeroShotImageClassificationPipeline"
    assert (folder / "pipelines_alta.py").is_file()


def test_zero_shot_classification_on_paths_pil_and_dicom(folder, reference, realdata_dir):
    classifier = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    png = realdata_dir / PNG
    inputs = [str(png), Image.open(png), *(str(realdata_dir / d) for d in DICOMS)]
    results = [classifier(item, candidate_labels=LABELS) for item in inputs]
    for item, result in zip([png, png, *(realdata_dir / d for d in DICOMS)], results):
        expected = _expected_scores(reference, item)
        got = torch.tensor([next(r["score"] for r in result if r["label"] == label) for label in LABELS])
        assert torch.allclose(got, expected, atol=1e-5), (item, got, expected)
        assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)
    # the two DICOMs are different radiographs: different scores; path and PIL of one file: the same
    assert results[0] == results[1] and results[2] != results[3]
    # a template formats the labels; a batch of images gives one result per image
    batch = classifier([str(png), str(realdata_dir / DICOMS[0])], candidate_labels=["effusion", "edema"],
                       hypothesis_template="there is {}")
    assert len(batch) == 2 and {r["label"] for r in batch[0]} == {"effusion", "edema"}


def test_image_and_text_feature_extraction(folder, reference, realdata_dir):
    model, processor = reference
    dicom = realdata_dir / DICOMS[1]
    images = pipeline("image-feature-extraction", model=str(folder), trust_remote_code=True)
    pixel_values = processor(images=load_radiograph(dicom))["pixel_values"]
    with torch.no_grad():
        expected_pooled = model.get_image_features(pixel_values).pooler_output
        expected_hidden = model.vision_hidden_states(pixel_values)
    assert torch.allclose(images(str(dicom), pool=True, return_tensors=True), expected_pooled, atol=1e-5)
    assert torch.allclose(torch.tensor(images(str(dicom))), expected_hidden, atol=1e-5)

    texts = pipeline("feature-extraction", model=str(folder), trust_remote_code=True)
    report = "small left pleural effusion. no pneumothorax."
    encoded = processor(text=report, padding="longest")
    with torch.no_grad():
        expected_text = model.get_text_features(encoded["input_ids"], encoded["attention_mask"]).pooler_output
    assert torch.allclose(torch.tensor(texts(report, pool=True)), expected_text, atol=1e-5)
    assert torch.tensor(texts(report)).shape == (1, encoded["input_ids"].shape[1], 64)


def test_unreadable_image_names_the_file(folder, tmp_path):
    classifier = pipeline("zero-shot-image-classification", model=str(folder), trust_remote_code=True)
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom")
    with pytest.raises(ValueError, match="broken.dcm"):
        classifier(str(bad), candidate_labels=LABELS)
