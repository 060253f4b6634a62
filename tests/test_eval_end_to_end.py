"""A real (tiny) ALTA model folder, loaded as users load it (Auto classes; remote code in a fresh interpreter is tested in test_remote_code.py), through every evaluation
task's code path on the small fixtures in the real dataset layouts: metrics.json and plots come out, and the figures
are those of the model's own embeddings."""

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from alta_hf.evaluation import run_task
from tests import eval_stand_ins as stand_ins
from tests.factories import save_tiny_alta_folder

TASKS = {
    "chexpert_8x200": (stand_ins.make_chexpert_8x200, {}),
    "chexpert_5x200": (stand_ins.make_chexpert_5x200, {}),
    "rsna": (stand_ins.make_rsna, {}),
    "mimic_5x200": (stand_ins.make_mimic_5x200, {}),
    "demo": (stand_ins.make_demo, {"split": "test"}),
}


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, golden_dir):
    folder = save_tiny_alta_folder(tmp_path_factory.mktemp("alta") / "alta-tiny",
                                   golden_dir / "BiomedVLP-CXR-BERT-specialized")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    return model, processor


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_runs_on_the_saved_model(task, loaded, tmp_path):
    model, processor = loaded
    make, kwargs = TASKS[task]
    data = make(tmp_path / "data")
    out = tmp_path / "out"
    result = run_task(task, model, processor, data, output_dir=out, progress=False, **kwargs)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == pytest.approx(result["metrics"]) and result["metrics"]
    assert all(0.0 <= value <= 1.0 for value in result["metrics"].values())
    for name in result["plots"]:
        with Image.open(out / name) as image:
            image.verify()
    # the cached embeddings are the model's own: rerunning with the same cache gives the same figures
    again = run_task(task, model, processor, data, progress=False, **kwargs)
    assert again["metrics"] == pytest.approx(result["metrics"])


def test_zero_shot_scores_are_the_models_logits(loaded, tmp_path):
    model, processor = loaded
    data = stand_ins.make_demo(tmp_path / "data")
    result = run_task("demo", model, processor, data, split="test", progress=False)
    # an untrained tiny model is not at ceiling: the figure comes from its features, not from the labels
    assert result["metrics"]["zero_shot/accuracy"] < 1.0
    with torch.no_grad():
        pixel_values = processor(images=Image.new("L", (64, 64), 128))["pixel_values"]
        features = model.get_image_features(pixel_values).pooler_output
    assert features.shape == (1, model.config.projection_dim) and torch.isfinite(features).all()
