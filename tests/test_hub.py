"""push_to_hub against the in-process Hub stand-in (tests/fake_hub.py): one commit, card metadata,
no token in any output, and `from_pretrained` of what was uploaded."""

import json
import logging
import shutil

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard

from alta_hf.evaluation import run_task
from alta_hf.evaluation.hub import collect_evaluations, main as hub_main, push_folder_to_hub
from alta_hf.evaluation.loading import load_model_and_processor
from tests import eval_stand_ins as stand_ins
from tests.fake_hub import FakeHub

TOKEN = "hf_FakeToken0123456789abcdef"


@pytest.fixture(scope="module")
def run_dir(clip_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "model"
    shutil.copytree(clip_dir, folder)
    # A training folder also holds things that must not be uploaded.
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "optimizer.bin").write_bytes(b"optimizer state")
    (folder / "rng_state.pth").write_bytes(b"pickle")
    (folder / "training_args.json").write_text(json.dumps({"hub_token": TOKEN, "learning_rate": 1e-4, "data_dir": "/data/demo"}))
    return folder


@pytest.fixture
def eval_dir(tmp_path, processing_stand_ins):
    out = tmp_path / "eval_rsna"
    run_task("rsna", stand_ins.ConceptModel(), stand_ins.ConceptProcessor(), stand_ins.make_rsna(tmp_path / "data"),
             output_dir=out, progress=False)
    return out


@pytest.fixture
def hub():
    with FakeHub().installed() as fake:
        yield fake


def test_push_uploads_everything_in_one_commit_without_leaking_the_token(run_dir, eval_dir, hub, tmp_path, caplog, capfd):
    logs = tmp_path / "log.jsonl"
    logs.write_text("\n".join(json.dumps({"step": s, "train/loss": 1.0 / (s + 1)}) for s in range(4)))
    with caplog.at_level(logging.DEBUG):
        commit = push_folder_to_hub(run_dir, "me/alta-tiny", token=TOKEN, eval_dirs=[eval_dir], training_logs=logs)

    assert hub.commit_count("me/alta-tiny") == 1 and commit.oid == hub.repos["me/alta-tiny"]["commits"][-1][0]
    files = hub.files("me/alta-tiny")
    local = {p.name for p in run_dir.iterdir() if p.is_file()} - {"rng_state.pth"}
    assert set(files) == local | {"README.md", "loss_curves.png", "evaluation/rsna/metrics.json", "evaluation/rsna/roc_curve.png"}
    assert files["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    assert files["evaluation/rsna/roc_curve.png"].startswith(b"\x89PNG") and files["loss_curves.png"].startswith(b"\x89PNG")

    # The token authenticated every write, and appears nowhere else.
    writes = [auth for method, path, auth in hub.requests if method == "POST"]
    assert writes and all(auth == f"Bearer {TOKEN}" for auth in writes)
    captured = capfd.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text
    assert all(TOKEN.encode() not in content for content in files.values())
    assert json.loads(files["training_args.json"]) == {"learning_rate": 1e-4, "data_dir": "/data/demo"}  # token dropped

    card = ModelCard.load("me/alta-tiny")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics["roc_auc"] == pytest.approx(0.95)
    assert "![roc curve](evaluation/rsna/roc_curve.png)" in card.text and "| `learning_rate` | `0.0001` |" in card.text
    assert card.data.license == "other"  # demo data: no licence chosen


def test_uploaded_model_loads_with_from_pretrained(run_dir, hub, tmp_path, monkeypatch):
    push_folder_to_hub(run_dir, "me/alta-load", token=TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub_cache"))
    model, processor, snapshot = load_model_and_processor("me/alta-load")
    from transformers import AutoModel, AutoProcessor

    original = AutoModel.from_pretrained(run_dir)
    assert all(torch.equal(a, b) for a, b in zip(original.state_dict().values(), model.state_dict().values()))
    assert str(snapshot).startswith(str(tmp_path / "hub_cache"))
    local = AutoProcessor.from_pretrained(run_dir)(text=["there is edema"], return_tensors="pt")["input_ids"]
    assert torch.equal(processor(text=["there is edema"], return_tensors="pt")["input_ids"], local)


def test_mimic_weights_warn_when_public_and_private_flag_reaches_the_hub(run_dir, hub, caplog):
    with caplog.at_level(logging.WARNING):
        push_folder_to_hub(run_dir, "me/public", token=TOKEN, card_kwargs={"training_data": "mimic"})
    assert "PhysioNet" in caplog.text and not hub.repos["me/public"]["private"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        push_folder_to_hub(run_dir, "me/private", token=TOKEN, private=True, card_kwargs={"training_data": "mimic"})
    assert "PhysioNet" not in caplog.text and hub.repos["me/private"]["private"]
    # Pushing again to an existing repo adds a commit.
    push_folder_to_hub(run_dir, "me/private", token=TOKEN, private=True, commit_message="second")
    assert hub.commit_count("me/private") == 2 and hub.commit_messages[-1] == ("me/private", "second")


def test_hub_command_line_takes_the_token_from_the_environment(run_dir, eval_dir, hub, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub_main(["--folder", str(run_dir), "--repo-id", "me/cli", "--eval-dir", str(eval_dir), "--private", "--keep-readme"])
    out = capsys.readouterr().out
    assert "pushed" in out and TOKEN not in out
    assert "README.md" not in hub.files("me/cli") and "evaluation/rsna/metrics.json" in hub.files("me/cli")
    assert any(auth == f"Bearer {TOKEN}" for _, _, auth in hub.requests)


def test_bad_folders_are_rejected(tmp_path, eval_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        push_folder_to_hub(tmp_path, "me/x", token=TOKEN)
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        collect_evaluations([tmp_path])
    assert [name for name, _, _ in collect_evaluations([eval_dir, eval_dir])] == ["rsna", "rsna-test"]


def test_a_file_holding_the_token_stops_the_upload(run_dir, hub, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(run_dir, folder)
    (folder / "notes.txt").write_text(f"token={TOKEN}")
    with pytest.raises(ValueError, match="notes.txt contains the Hub token") as error:
        push_folder_to_hub(folder, "me/leak", token=TOKEN)
    assert TOKEN not in str(error.value) and "me/leak" not in hub.repos
