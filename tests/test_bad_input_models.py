"""Bad model folders, weights and run settings (issue 17): corrupt safetensors, folders that are not ALTA, a missing
processor_config.json, a tokenizer longer than the text tower, empty .pth files, unwritable output folders and a
non-UTF-8 alta_dataset.json. Each case asserts an error that names the input, or the value that comes out."""

import json
import shutil

import pytest
import torch
from transformers import AutoModel, BertTokenizer, pipeline

import eval as eval_cli
from alta_hf.evaluation.data import EvaluationDataError, load_eval_data
from alta_hf.evaluation.loading import ModelLoadError, load_model_and_processor
from alta_hf.evaluation.output_folder import OutputFolderError, ensure_writable_directory
from alta_hf.modeling_alta import AltaForPreTraining
from alta_hf.modeling_alta.convert_original_alta import ConversionError, load_original_checkpoint
from alta_hf.processing import AltaImageProcessor, AltaProcessor, load_processor
from alta_hf.processing.write_processor import write_processor
from tests.factories import save_tiny_alta_folder, tiny_alta_config

POSITIONS = 64  # the demo model's text tower, whose tokenizer allowed 128 tokens


@pytest.fixture(scope="module")
def vocab_dir(golden_dir):
    return golden_dir / "BiomedVLP-CXR-BERT-specialized"


@pytest.fixture(scope="module")
def alta_folder(tmp_path_factory, vocab_dir):
    return save_tiny_alta_folder(tmp_path_factory.mktemp("alta") / "alta", vocab_dir)


def _copy(folder, tmp_path, name="copy"):
    return shutil.copytree(folder, tmp_path / name)


# ----- corrupt weights ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "truncated", "junk"])
def test_corrupt_safetensors_names_the_file(tmp_path, alta_folder, damage):
    folder = _copy(alta_folder, tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "junk": b"x" * 100}[damage])
    with pytest.raises(OSError, match="corrupt or truncated weights") as info:
        AutoModel.from_pretrained(folder, trust_remote_code=True)
    assert str(weights) in str(info.value) and f"{weights.stat().st_size:,} bytes" in str(info.value)
    with pytest.raises(ModelLoadError, match="corrupt or truncated weights") as info:
        load_model_and_processor(str(folder))
    assert str(weights) in str(info.value)


def test_empty_or_cut_pth_says_why(tmp_path, golden_dir):
    empty = tmp_path / "ALTA.pth"
    empty.write_bytes(b"")
    with pytest.raises(ConversionError, match=r"ALTA\.pth: the checkpoint file is empty \(0 bytes\)"):
        load_original_checkpoint(empty)
    cut = tmp_path / "cut.pth"
    cut.write_bytes((golden_dir / "ALTA_random.pth").read_bytes()[:5000])
    with pytest.raises(ConversionError, match=r"cut\.pth \(5,000 bytes\).*truncated, damaged or not a PyTorch"):
        load_original_checkpoint(cut)


# ----- folders that are not ALTA, or lack their processor ----------------------------------------------------------
def test_config_of_another_model_type_is_refused_not_random(tmp_path, alta_folder):
    folder = _copy(alta_folder, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "clip"
    config.pop("auto_map", None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"model_type 'clip'.*not in the weights file") as info:
        load_model_and_processor(str(folder))
    assert str(folder) in str(info.value)


def test_missing_processor_config_on_a_112_px_model_is_named(tmp_path, vocab_dir):
    folder = tmp_path / "small"
    torch.manual_seed(0)
    AltaForPreTraining(tiny_alta_config(vision_config={"image_size": 112})).save_pretrained(folder)
    BertTokenizer.from_pretrained(vocab_dir).save_pretrained(folder)  # what the converters write: no processor
    with pytest.raises(ModelLoadError, match=r"224-px images but the model's image tower takes 112-px") as info:
        load_model_and_processor(str(folder))
    assert "no processor_config.json" in str(info.value) and str(folder) in str(info.value)
    AltaProcessor(AltaImageProcessor(size={"shortest_edge": 128}, crop_size={"height": 112, "width": 112}),
                  BertTokenizer.from_pretrained(vocab_dir)).save_pretrained(folder)
    model, processor, _ = load_model_and_processor(str(folder))
    assert processor.image_processor.crop_size.height == 112


# ----- the text tower's length limit -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_text_folder(tmp_path_factory, vocab_dir):
    """A folder written as the demo's was: a tokenizer (and processor) allowing 128 tokens, a 64-position tower."""
    folder = tmp_path_factory.mktemp("short") / "alta"
    torch.manual_seed(0)
    AltaForPreTraining(tiny_alta_config(text_config={"max_position_embeddings": POSITIONS})).eval().save_pretrained(folder)
    tokenizer = BertTokenizer.from_pretrained(vocab_dir, model_max_length=128)
    AltaProcessor(AltaImageProcessor(), tokenizer, max_length=128).save_pretrained(folder)
    return folder


LONG_PROMPT = " ".join(["small left pleural effusion"] * 40)  # far more than 64 tokens


def test_pipelines_truncate_to_the_text_tower(short_text_folder):
    extractor = pipeline("feature-extraction", model=str(short_text_folder), trust_remote_code=True)
    features = extractor(LONG_PROMPT, return_tensors=True)
    assert features.shape[1] == POSITIONS
    model = AltaForPreTraining.from_pretrained(short_text_folder).alta.eval()
    ids = extractor.tokenizer(LONG_PROMPT, truncation=True, max_length=POSITIONS, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model.text_hidden_states(ids, torch.ones_like(ids))
    torch.testing.assert_close(features, expected)
    classifier = pipeline("zero-shot-image-classification", model=str(short_text_folder), trust_remote_code=True)
    scores = classifier(torch.rand(64, 64).numpy(), candidate_labels=[LONG_PROMPT, "no effusion"])
    assert abs(sum(score["score"] for score in scores) - 1.0) < 1e-5
    # the folder's own copy of the processing code raises its own RadiographLoadError class
    with pytest.raises(ValueError, match=r"array of shape \(64, 64\).*negative pixel values") as info:
        classifier(torch.randn(64, 64).numpy(), candidate_labels=["no effusion"])  # a z-scored image
    assert type(info.value).__name__ == "RadiographLoadError"


def test_loading_and_rewriting_the_folder_caps_the_length(short_text_folder, tmp_path, caplog):
    processor = load_processor(short_text_folder)
    assert processor.max_length == POSITIONS and processor.tokenizer.model_max_length == POSITIONS
    assert "64 positions" in caplog.text
    _, evaluated, _ = load_model_and_processor(str(short_text_folder))
    assert evaluated.max_length == POSITIONS and evaluated.tokenizer.model_max_length == POSITIONS
    rewritten = _copy(short_text_folder, tmp_path)
    assert write_processor(rewritten, overwrite=True)
    assert json.loads((rewritten / "tokenizer_config.json").read_text())["model_max_length"] == POSITIONS
    assert AltaProcessor.from_pretrained(rewritten).max_length == POSITIONS


# ----- output folders and dataset metadata -------------------------------------------------------------------------
def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputFolderError, match="cannot create the output folder"):
        ensure_writable_directory(blocker / "out")
    # the model is never loaded: the nonexistent model would otherwise be the error
    with pytest.raises(SystemExit, match=rf"{blocker / 'out'}: cannot create the output folder"):
        eval_cli.main(["--model", str(tmp_path / "no-model"), "--task", "rsna", "--data", str(tmp_path),
                       "--output-dir", str(blocker / "out")])
    with pytest.raises(SystemExit, match="cannot create the embedding cache folder"):
        eval_cli.main(["--model", str(tmp_path / "no-model"), "--task", "rsna", "--data", str(tmp_path),
                       "--output-dir", str(tmp_path / "out"), "--cache-dir", str(blocker / "cache")])
    assert ensure_writable_directory(tmp_path / "fresh" / "out").is_dir()


def test_non_utf8_dataset_metadata_is_named(tmp_path, alta_folder):
    metadata = tmp_path / "alta_dataset.json"
    metadata.write_bytes('{"kind": "rsna", "image_root": "Bilder-\u00fcbersicht"}'.encode("latin-1"))
    with pytest.raises(EvaluationDataError, match="not UTF-8") as info:
        load_eval_data(tmp_path)
    assert str(metadata) in str(info.value)
    with pytest.raises(SystemExit, match="alta_dataset.json: not UTF-8"):
        eval_cli.main(["--model", str(alta_folder), "--task", "rsna", "--data", str(tmp_path),
                       "--output-dir", str(tmp_path / "out"), "--device", "cpu", "--quiet"])
