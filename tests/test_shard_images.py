"""Pre-resized image shards (`dataset_scripts.shard_images`): same training tensors as the source files, resume, skips."""

import json

import datasets
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps
from transformers import BertTokenizer

from alta_hf.dataset_scripts import shard_images as shard_module
from alta_hf.dataset_scripts.common import DatasetBuildError, frame_to_dataset, save_dataset
from alta_hf.dataset_scripts.mimic_cxr import PRETRAINING_FEATURES
from alta_hf.dataset_scripts.shard_images import IMAGE_COLUMNS, WORK_SUFFIX, main, shard_images
from alta_hf.processing import AltaImageProcessor, AltaProcessor
from alta_hf.training.data import StudyDataset, load_pretraining_split, view_sources

SIZE = 512
# Mean |difference| per study between tensors from shards and from the source files, in gray levels (0-255), measured
# on these real radiographs. PNG: the 448 target and slot 0 are identical (the stored image is exactly the processor's
# 512 px resize); the 256 px views (slots 1-3) differ by 0.30-0.42, as they are resized from the stored 512 px image
# rather than from the file decoded at reduced scale. JPEG quality 95 adds the re-encoding error: target / slot 0 up
# to 0.86, slots 1-3 up to 0.71. Bounds: (target and slot 0, slots 1-3).
MEAN_ABS_BOUND = {"png": (0.0, 0.6), "jpeg": (1.2, 1.0)}
GRAY_LEVELS_PER_UNIT = 0.2834 * 255  # normalised units -> gray levels (the processor's std)


def _radiographs(realdata_dir) -> dict[str, Image.Image]:
    """Real radiographs at MIMIC-like aspect: large ones (draft decoding active) and a small one (never enlarged)."""
    mimic = Image.open(realdata_dir / "derived" / "rg1_mimic_cxr_jpg_style.jpg").convert("L")
    nih = Image.open(realdata_dir / "images" / "nih_cxr14" / "00000001_000.png").convert("L")
    return {
        "a1": mimic.resize((1100, 1320), Image.Resampling.BICUBIC),
        "a2": ImageOps.mirror(nih).resize((1120, 1300), Image.Resampling.BICUBIC),
        "b1": ImageOps.autocontrast(mimic, cutoff=2).resize((1200, 1100), Image.Resampling.BICUBIC),
        "b2": nih.resize((500, 600), Image.Resampling.BICUBIC),
        "d1": mimic.rotate(4).resize((1050, 1260), Image.Resampling.BICUBIC),
        "e1": ImageOps.mirror(mimic).resize((1080, 1300), Image.Resampling.BICUBIC),
    }


# subject, study, split, frontal, lateral, prior study, prior frontal, prior lateral ("x*": files that do not exist)
STUDIES = [
    (10, 501, "train", "a1", "a2", None, None, None),
    (10, 502, "train", "b1", "b2", 501, "a1", "a2"),
    (11, 503, "train", "b2", None, None, None, None),
    (12, 504, "train", "x1", "a2", None, None, None),  # frontal missing -> study dropped
    (13, 505, "validate", "d1", "bad", 599, "x2", None),  # corrupt lateral and missing prior -> views dropped
    (14, 506, "test", "e1", "a1", None, None, None),
]


def _path(name):
    return None if name is None else f"files/p1/{name}.jpg"


@pytest.fixture(scope="module")
def source(tmp_path_factory, realdata_dir):
    """A MIMIC-like image tree and a pre-training dataset in the builder's format (`PRETRAINING_FEATURES`)."""
    folder = tmp_path_factory.mktemp("shards")
    root = folder / "mimic"
    (root / "files" / "p1").mkdir(parents=True)
    for name, image in _radiographs(realdata_dir).items():
        image.save(root / _path(name), quality=95)
    (root / _path("bad")).write_bytes((root / _path("a1")).read_bytes()[:3000])  # truncated JPEG
    frame = pd.DataFrame([
        {"subject_id": subject, "study_id": study, "split": split, "frontal_path": _path(f), "lateral_path": _path(lat),
         "prior_study_id": prior, "prior_frontal_path": _path(pf), "prior_lateral_path": _path(pl),
         "report": f"Study {study}. Heart size is normal. No pleural effusion."}
        for subject, study, split, f, lat, prior, pf, pl in STUDIES
    ])
    frame["prior_study_id"] = frame["prior_study_id"].astype("Int64")
    dataset = datasets.DatasetDict({
        split: frame_to_dataset(frame[frame["split"] == split], PRETRAINING_FEATURES, split, "test")
        for split in ("train", "validate", "test")
    })
    dataset_dir = folder / "pretrain"
    save_dataset(dataset, dataset_dir, {"kind": "pretraining", "image_root": str(root)}, {})
    return dataset_dir, root


@pytest.fixture(scope="module")
def processor(golden_dir):
    tokenizer = BertTokenizer(vocab=str(golden_dir / "BiomedVLP-CXR-BERT-specialized" / "vocab.txt"), model_max_length=128)
    return AltaProcessor(AltaImageProcessor(), tokenizer)


@pytest.fixture(scope="module")
def sharded(source, tmp_path_factory):
    """Shards in both formats, made once through the CLI (PNG with two processes, JPEG, the default, in-process)."""
    dataset_dir, root = source
    outputs = {}
    for image_format, num_proc in (("png", 2), ("jpeg", 1)):
        out = tmp_path_factory.mktemp(image_format) / "shards"
        main(["--dataset", str(dataset_dir), "--root", str(root), "--size", str(SIZE), "--output-dir", str(out),
              "--num-proc", str(num_proc), "--shard-size", "2"] + (["--format", "png"] if image_format == "png" else []))
        outputs[image_format] = out
    return outputs


def _mean_abs_gray(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean()) * GRAY_LEVELS_PER_UNIT


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_training_tensors_from_shards_match_source_files(sharded, source, processor, image_format):
    dataset_dir, root = source
    source_rows, source_root, _ = load_pretraining_split(str(dataset_dir), "train")
    shard_rows, shard_root, meta = load_pretraining_split(str(sharded[image_format]), "train")
    assert meta["images_embedded"] and meta["shard_image_size"] == SIZE and meta["shard_image_format"] == image_format
    # the dropped study is the last train row, so the other rows keep their indices (and their sample seeds)
    assert shard_rows["study_id"] == [501, 502, 503]
    from_files = StudyDataset(source_rows, processor, source_root, seed=3)
    from_shards = StudyDataset(shard_rows, processor, shard_root, seed=3)
    exact_bound, view_bound = MEAN_ABS_BOUND[image_format]
    for index in range(len(shard_rows)):
        expected, actual = from_files[index], from_shards[index]
        assert isinstance(view_sources(shard_rows[index], shard_root)[0], Image.Image)  # the embedded image is used
        assert expected.keys() == actual.keys()
        for key in ("view_mask", "input_ids", "attention_mask", "mlm_input_ids", "mlm_labels", "dropped_views"):
            assert torch.equal(expected[key], actual[key]), key
        assert _mean_abs_gray(expected["target_pixel_values"], actual["target_pixel_values"]) <= exact_bound
        assert _mean_abs_gray(expected["pixel_values"][0], actual["pixel_values"][0]) <= exact_bound
        present = expected["view_mask"].bool().clone()
        present[0] = False
        if present.any():
            difference = _mean_abs_gray(expected["pixel_values"][present], actual["pixel_values"][present])
            assert 0.0 < difference <= view_bound
        assert torch.equal(expected["pixel_values"][~expected["view_mask"].bool()],
                           actual["pixel_values"][~expected["view_mask"].bool()])


def test_stored_images_are_shrunk_never_enlarged(sharded, source):
    dataset_dir, root = source
    train = datasets.load_from_disk(str(sharded["png"]))["train"]
    row = train[1]  # study 502: large frontal, small (500x600) lateral
    assert min(row["frontal_image"].size) == SIZE and row["frontal_image"].mode == "L"
    assert row["lateral_image"].size == (500, 600)
    large = Image.open(root / _path("b1"))
    assert row["frontal_image"].size == (int(SIZE * large.width / large.height), SIZE)
    # the prior views are the first study's images, decoded once and embedded again
    assert train[1]["prior_frontal_image"].tobytes() == train[0]["frontal_image"].tobytes()


def test_skipped_files_are_counted(sharded):
    out = sharded["png"]
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["images"] == {**summary["images"], "distinct": 9, "written": 6, "missing_file": 2, "unreadable_file": 1}
    assert summary["rows"] == {"train": 3, "validate": 1, "test": 1}
    assert summary["dropped_studies_unusable_frontal"] == {"train": 1, "validate": 0, "test": 0}
    assert summary["dropped_views"]["validate.lateral_path"] == 1
    assert summary["dropped_views"]["validate.prior_frontal_path"] == 1
    assert sum(summary["dropped_views"].values()) == 2
    validate = datasets.load_from_disk(str(out))["validate"][0]
    assert validate["frontal_image"] is not None
    assert validate["lateral_image"] is None and validate["lateral_path"] is None
    assert validate["prior_frontal_image"] is None and validate["prior_frontal_path"] is None
    assert validate["prior_study_id"] == 599 and validate["report"].startswith("Study 505")
    assert not out.with_name(out.name + WORK_SUFFIX).exists()  # the work folder is removed when done


def test_interrupted_job_resumes_without_redoing_shards(source, tmp_path, monkeypatch):
    dataset_dir, root = source
    decoded = []
    real_shrink = shard_module.shrink_radiograph

    def counting_shrink(path, size):
        decoded.append(str(path))
        return real_shrink(path, size)

    monkeypatch.setattr(shard_module, "shrink_radiograph", counting_shrink)
    out = tmp_path / "shards"
    work = tmp_path / f"shards{WORK_SUFFIX}"
    options = dict(size=SIZE, root=root, num_proc=1, shard_size=2)

    assert shard_images(dataset_dir, out, max_shards=2, **options) is None
    assert not out.exists() and sorted(p.name for p in work.glob("*.arrow")) == ["images-00000.arrow", "images-00001.arrow"]
    first = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("*.arrow")}
    assert len(decoded) == 4

    assert shard_images(dataset_dir, out, max_shards=4, **options) is None  # the last 3 image shards + 1 row shard
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in work.glob("images-0000[01].arrow")} == first
    assert len(list(work.glob("images-*.arrow"))) == 5 and len(list(work.glob("rows-*.arrow"))) == 1

    with pytest.raises(DatasetBuildError, match="other settings.*size"):
        shard_images(dataset_dir, out, **{**options, "size": 256})

    summary = shard_images(dataset_dir, out, **options)
    assert sorted(decoded) == sorted(set(decoded)) and len(decoded) == 9  # every image decoded exactly once
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert shard_images(dataset_dir, out, **options) == summary  # the same command after the end redoes nothing
    assert len(decoded) == 9 and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == finished
    assert summary["rows"] == {"train": 3, "validate": 1, "test": 1}
    result = datasets.load_from_disk(str(out))
    assert result["train"]["study_id"] == [501, 502, 503] and result["test"]["study_id"] == [506]
    assert all(result["train"][column][0] is not None for column in IMAGE_COLUMNS[:2])
    assert not work.exists()


def test_bad_dataset_path_gives_clear_error(tmp_path, source, capsys):
    _, root = source
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(tmp_path / "nowhere"), "--root", str(root), "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"error: {tmp_path / 'nowhere'}: no alta_dataset.json" in capsys.readouterr().err
    with pytest.raises(DatasetBuildError, match=f"{tmp_path / 'nowhere'}.*alta_dataset.json"):
        shard_images(tmp_path / "nowhere", tmp_path / "out", SIZE, root=root)
    other = tmp_path / "eval"
    save_dataset(datasets.DatasetDict({"test": datasets.Dataset.from_dict({"image_path": ["a.jpg"], "label": [0]})}),
                 other, {"kind": "chexpert_5x200", "image_root": str(root)}, {})
    with pytest.raises(DatasetBuildError, match="chexpert_5x200.*pre-training"):
        shard_images(other, tmp_path / "out", SIZE, root=root)
    dataset_dir, _ = source
    with pytest.raises(DatasetBuildError, match="must differ from the source"):
        shard_images(dataset_dir, dataset_dir, SIZE, root=root)
    with pytest.raises(DatasetBuildError, match=f"{tmp_path / 'nowhere'}: the image root"):
        shard_images(dataset_dir, tmp_path / "out", SIZE, root=tmp_path / "nowhere")
