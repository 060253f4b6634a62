"""`eval.py` on a saved model folder (a tiny transformers CLIP stands in for ALTA until it is merged)."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

import eval as eval_cli
from alta_hf.evaluation.loading import ModelLoadError, load_model_and_processor
from tests import eval_stand_ins as stand_ins


def _expected_rsna_auroc(model_dir, data_dir):
    """The RSNA score computed by hand with the model and processor, for the readable images."""
    from transformers import AutoModel, AutoProcessor

    from alta_hf import processing

    model, processor = AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    metadata = json.loads((data_dir / "alta_dataset.json").read_text())
    import datasets

    rows = [row for row in datasets.load_from_disk(str(data_dir))["test"] if not row["image_path"].endswith("corrupt.dcm")]
    images = [processing.load_radiograph(f"{metadata['image_root']}/{row['image_path']}") for row in rows]
    with torch.no_grad():
        image = F.normalize(model.get_image_features(**processor(images=images, return_tensors="pt")).pooler_output, dim=-1)
        prompts = processor(text=["There is no pneumonia", "There is pneumonia"], padding="max_length", max_length=10, return_tensors="pt")
        text = F.normalize(model.get_text_features(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"]).pooler_output, dim=-1)
    cosine = image @ text.T
    scores = torch.softmax(torch.stack([cosine[:, 1], cosine[:, 0]], -1), -1)[:, 0].numpy()
    return roc_auc_score([row["label"] for row in rows], scores)


def test_eval_cli_rsna_writes_metrics_plots_and_caches(tmp_path, clip_dir, processing_stand_ins, capsys):
    data = stand_ins.make_rsna(tmp_path / "data")
    logs = tmp_path / "train_log.jsonl"
    logs.write_text("\n".join(json.dumps({"step": s, "train/loss": 3 - s / 10, "lr": 1e-4}) for s in range(5)))
    out = tmp_path / "out"
    argv = ["--model", str(clip_dir), "--task", "rsna", "--data", str(data), "--output-dir", str(out),
            "--device", "cpu", "--batch-size", "4", "--quiet", "--training-logs", str(logs)]
    first = eval_cli.main(argv)
    printed = capsys.readouterr().out
    assert "roc_auc" in printed and "skipped 1 unreadable image" in printed
    assert first["metrics"]["roc_auc"] == pytest.approx(_expected_rsna_auroc(clip_dir, data), abs=1e-6)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["task"] == "rsna" and saved["model"] == str(clip_dir) and saved["images"]["skipped"] == 1
    for name in ("roc_curve.png", "loss_curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert first["embedding"]["cache_misses"] == 2

    second = eval_cli.main(argv)
    assert second["embedding"] == {"images_embedded": 0, "texts_embedded": 0, "cache_hits": 2, "cache_misses": 0}
    assert second["metrics"] == first["metrics"]


def _precision(direction, ks):
    return {f"{direction}/precision_at_{k}" for k in ks}


ZERO_SHOT = {"zero_shot/accuracy", "zero_shot/macro_f1"}
OTHER_TASKS = {
    # task: (fixture, metric names, plots); the fixtures are small, so 5x200's P@100 is skipped
    "chexpert_8x200": (stand_ins.make_chexpert_8x200, _precision("image_to_image", (5, 10, 50)) | _precision("text_to_image", (5, 10, 50)),
                       ["image_to_image_precision_at_k.png", "text_to_image_precision_at_k.png"]),
    "chexpert_5x200": (stand_ins.make_chexpert_5x200, _precision("image_to_text", (5, 10)) | ZERO_SHOT,
                       ["image_to_text_precision_at_k.png", "zero_shot_confusion_matrix.png"]),
    "mimic_5x200": (stand_ins.make_mimic_5x200, _precision("image_to_text", (1, 5, 10)) | _precision("text_to_image", (1, 5, 10)),
                    ["image_to_text_precision_at_k.png", "text_to_image_precision_at_k.png"]),
    "demo": (stand_ins.make_demo, _precision("image_to_text", (1, 5, 10)) | _precision("text_to_image", (1, 5, 10)) | ZERO_SHOT,
             ["image_to_text_precision_at_k.png", "text_to_image_precision_at_k.png", "zero_shot_confusion_matrix.png"]),
}


@pytest.mark.parametrize("task", sorted(OTHER_TASKS))
def test_eval_cli_every_other_task(task, tmp_path, clip_dir, processing_stand_ins):
    make, names, plots = OTHER_TASKS[task]
    out = tmp_path / "out"
    result = eval_cli.main(["--model", str(clip_dir), "--task", task, "--data", str(make(tmp_path / "data")),
                            "--output-dir", str(out), "--quiet", "--no-cache", "--batch-size", "8"])
    assert set(result["metrics"]) == names
    assert all(0 <= value <= 1 for value in result["metrics"].values())
    assert result["protocol"]["model_text_positions"] == 32  # e.g. 5x200's 256-token impressions are cut to 32
    assert not (out / "embedding_cache").exists()
    assert json.loads((out / "metrics.json").read_text())["metrics"] == pytest.approx(result["metrics"])
    assert sorted(p.name for p in out.glob("*.png")) == plots
    for name in plots:
        with Image.open(out / name) as image:
            image.verify()


def test_eval_cli_reports_bad_input_clearly(tmp_path, clip_dir, processing_stand_ins):
    with pytest.raises(SystemExit, match="no alta_dataset.json"):
        eval_cli.main(["--model", str(clip_dir), "--task", "rsna", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["--model", str(clip_dir), "--task", "nonsense", "--data", str(tmp_path), "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2


def test_processor_fallback_for_a_folder_without_processor_files(tmp_path, monkeypatch):
    from alta_hf import processing

    bare = stand_ins.save_tiny_clip(tmp_path / "bare", with_processor=False)
    built = []
    monkeypatch.setattr(processing, "load_processor", lambda folder: built.append(folder) or stand_ins.ConceptProcessor())
    model, processor, model_dir = load_model_and_processor(str(bare))
    assert built == [bare] and isinstance(processor, stand_ins.ConceptProcessor) and model_dir == bare

    def no_tokenizer(folder):
        raise FileNotFoundError(f"{folder}: no processor_config.json and no tokenizer files")

    monkeypatch.setattr(processing, "load_processor", no_tokenizer)
    with pytest.raises(ModelLoadError, match="no usable processor .*no tokenizer files"):
        load_model_and_processor(str(bare))


def test_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model_and_processor(str(tmp_path / "file.txt"))
    with pytest.raises(ModelLoadError, match="not a local folder"):
        load_model_and_processor("nobody/no-such-model")
