"""Plots: loss curves from TensorBoard event files / JSONL logs, and the evaluation figures."""

import json

import pytest
from PIL import Image

from alta_hf.evaluation.plots import plot_confusion_matrix, plot_loss_curves, plot_precision_at_k, plot_roc_curve, read_scalars


def _opens_as_png(path):
    with Image.open(path) as image:
        image.verify()
        return image.format == "PNG"


def test_loss_curves_from_tensorboard_events(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "logs" / "alta"  # accelerate's tracker writes into project_dir/<run name>
    with SummaryWriter(str(run)) as writer:
        for step in range(6):
            writer.add_scalar("train/loss", 4.0 - 0.5 * step, step)
            writer.add_scalar("train/global_loss", 2.0 - 0.25 * step, step)
            writer.add_scalar("lr", 1e-4 * (step + 1), step)
        writer.add_scalar("val/roc_auc", 0.75, 5)
    scalars = read_scalars(tmp_path / "logs")
    assert sorted(scalars) == ["lr", "train/global_loss", "train/loss", "val/roc_auc"]
    assert scalars["train/loss"] == [(s, pytest.approx(4.0 - 0.5 * s)) for s in range(6)]
    tags = plot_loss_curves(tmp_path / "logs", tmp_path / "curves.png")
    assert tags == ["lr", "train/global_loss", "train/loss", "val/roc_auc"] and _opens_as_png(tmp_path / "curves.png")
    assert plot_loss_curves(tmp_path / "logs", tmp_path / "train.png", prefixes=["train/"]) == ["train/global_loss", "train/loss"]
    with pytest.raises(ValueError, match="no scalar series with prefix"):
        plot_loss_curves(tmp_path / "logs", tmp_path / "none.png", prefixes=["eval/"])


def test_loss_curves_from_jsonl_and_bad_logs(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"step": 0, "train/loss": 2.0, "note": "x"}) + "\n\n" + json.dumps({"step": 1, "train/loss": 1.5}) + "\n")
    assert read_scalars(log) == {"train/loss": [(0, 2.0), (1, 1.5)]}
    assert plot_loss_curves(log, tmp_path / "c.png") == ["train/loss"] and _opens_as_png(tmp_path / "c.png")
    log.write_text('{"train/loss": 1.0}\n')
    with pytest.raises(ValueError, match="log.jsonl:1: needs an integer 'step'"):
        read_scalars(log)
    with pytest.raises(FileNotFoundError, match="no such log folder"):
        read_scalars(tmp_path / "missing")


def test_evaluation_figures_are_pngs(tmp_path):
    plot_roc_curve([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.9], tmp_path / "roc.png")
    plot_confusion_matrix([[3, 1], [0, 4]], ["no pneumonia", "pneumonia"], tmp_path / "cm.png")
    plot_precision_at_k({"Edema": {"precision_at_5": 0.8, "precision_at_10": 0.5, "num_queries": 3},
                         "Fracture": {"precision_at_5": 0.4, "precision_at_10": 0.3, "num_queries": 3}}, tmp_path / "pk.png")
    assert all(_opens_as_png(tmp_path / name) for name in ("roc.png", "cm.png", "pk.png"))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, no leftovers
