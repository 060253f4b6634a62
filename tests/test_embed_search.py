"""python -m alta_hf.evaluation.embed (recursive JPEG/PNG/DICOM, shards, resume after a kill, skip-and-count, parquet) and
python -m alta_hf.evaluation.search (planted queries, contact sheet) on real radiographs with a tiny model."""

import json
import shutil

import pandas as pd
import pytest
import torch
from PIL import Image

import alta_hf.evaluation.embedding as embedding_module
from alta_hf.dataset_scripts.common import save_dataset
from alta_hf.evaluation.embed import list_images
from alta_hf.evaluation.embedding import feature_tensor
from alta_hf.evaluation.embed import main as embed_main
from alta_hf.evaluation.image_index import INDEX_FILE, read_index, read_shard, shard_path, write_json_atomic, write_shard
from alta_hf.evaluation.search import main as search_main
from tests.factories import save_tiny_alta_folder

FILES = ["images/nih_cxr14/00000001_000.png", "images/nih_cxr14/00027426_000.png",
         "derived/rg1_mimic_cxr_jpg_style.jpg", "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm",
         "dicom/siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]


@pytest.fixture(scope="module")
def alta_folder(tmp_path_factory, golden_dir):
    return save_tiny_alta_folder(tmp_path_factory.mktemp("alta") / "alta-tiny", golden_dir / "BiomedVLP-CXR-BERT-specialized")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, realdata_dir):
    """The real radiographs in nested folders, upper-case suffix included, plus a damaged PNG and a text file."""
    root = tmp_path_factory.mktemp("archive")
    for number, relative in enumerate(FILES):
        target = root / f"site{number % 2}" / "deep" / _archive_name(relative, number)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(realdata_dir / relative, target)
    (root / "site0" / "broken.png").write_bytes(b"\x89PNG not really")
    (root / "notes.txt").write_text("not an image")
    return root


def _archive_name(relative, number):
    name = relative.rsplit("/", 1)[1]
    return name.upper() if number == 2 else name  # .JPG counts too


def _run(alta_folder, archive, out, *extra):
    return embed_main(["--model", str(alta_folder), "--images", str(archive), "--output", str(out),
                       "--shard-size", "2", "--batch-size", "2", "--num-workers", "0", "--device", "cpu", *extra])


def test_lists_images_recursively_and_from_a_dataset(archive, tmp_path):
    found = list_images(archive)
    assert len(found) == 6 and found == sorted(found) and all(p.startswith(str(archive)) for p in found)
    assert not any(p.endswith(".txt") for p in found) and any(p.endswith(".JPG") for p in found)
    import datasets

    frame = pd.DataFrame({"image_path": ["a/x.png", "b/y.dcm", "a/x.png"], "label": [0, 1, 0]})
    dataset = datasets.DatasetDict({"test": datasets.Dataset.from_pandas(frame)})
    folder = save_dataset(dataset, tmp_path / "ds", {"kind": "demo", "image_root": str(tmp_path)}, {})
    assert list_images(folder) == [str(tmp_path / "a/x.png"), str(tmp_path / "b/y.dcm")]


def test_embedding_resumes_after_a_kill_without_redoing_work(alta_folder, archive, tmp_path, monkeypatch):
    real_embed = embedding_module.embed_images
    calls = []

    def killed_on_third_shard(model, processor, images, **kwargs):
        calls.append(list(images))
        if len(calls) == 3:
            raise KeyboardInterrupt  # what a kill leaves: two finished shards, the third never written
        return real_embed(model, processor, images, **kwargs)

    out = tmp_path / "index"
    monkeypatch.setattr(embedding_module, "embed_images", killed_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        _run(alta_folder, archive, out)
    assert json.loads((out / INDEX_FILE).read_text())["complete"] is False
    finished = {n: shard_path(out, n, "safetensors").stat().st_mtime_ns for n in (0, 1)}
    assert not shard_path(out, 2, "safetensors").exists()
    (out / ".shard-00002.safetensors.tmp999").write_bytes(b"half a shard")  # a kill during a write

    calls.clear()
    monkeypatch.setattr(embedding_module, "embed_images", lambda *a, **k: calls.append(list(a[2])) or real_embed(*a, **k))
    assert _run(alta_folder, archive, out) == 0
    assert calls == [list_images(archive)[4:6]]  # only the third shard was embedded
    assert {n: shard_path(out, n, "safetensors").stat().st_mtime_ns for n in (0, 1)} == finished
    manifest = json.loads((out / INDEX_FILE).read_text())
    assert manifest["complete"] and manifest["embedded"] == 5 and manifest["skipped"] == 1

    # the resumed index equals an uninterrupted one, in parquet as in safetensors
    fresh = tmp_path / "fresh"
    assert _run(alta_folder, archive, fresh, "--format", "parquet") == 0
    resumed, uninterrupted = read_index(out), read_index(fresh)
    assert resumed.paths == uninterrupted.paths and len(resumed.paths) == 5
    assert torch.allclose(resumed.embeddings, uninterrupted.embeddings, atol=1e-6)
    assert [f["path"].endswith("broken.png") for f in resumed.failures] == [True]
    # and equals the model's own features of each file
    from alta_hf.modeling_alta import AltaModel
    from alta_hf.processing import load_processor, load_radiograph

    model, processor = AltaModel.from_pretrained(alta_folder).eval(), load_processor(alta_folder)
    with torch.no_grad():
        expected = feature_tensor(model.get_image_features(processor(images=load_radiograph(resumed.paths[3]))["pixel_values"]))
    assert torch.allclose(resumed.embeddings[3], expected[0], atol=1e-5)

    # another shard size is another index: refused, not mixed
    with pytest.raises(SystemExit, match="shard_size"):
        embed_main(["--model", str(alta_folder), "--images", str(archive), "--output", str(out), "--shard-size", "3"])


def test_search_finds_the_planted_images(alta_folder, realdata_dir, tmp_path, capsys):
    from alta_hf.evaluation.embedding import embed_texts
    from alta_hf.modeling_alta import AltaModel
    from alta_hf.processing import load_processor

    queries = ["small left pleural effusion", "enlarged cardiac silhouette"]
    model, processor = AltaModel.from_pretrained(alta_folder).eval(), load_processor(alta_folder)
    planted = embed_texts(model, processor, queries, progress=False)
    generator = torch.Generator().manual_seed(0)
    paths = [str(realdata_dir / f) for f in FILES]
    embeddings = torch.randn(len(paths), planted.shape[1], generator=generator)
    embeddings[3], embeddings[1] = planted[0] * 2.5, planted[1] * 0.5  # the norm must not matter
    out = tmp_path / "index"
    out.mkdir()
    write_shard(shard_path(out, 0, "safetensors"), embeddings[:3], torch.arange(3), paths[:3], [])
    write_shard(shard_path(out, 1, "safetensors"), embeddings[3:], torch.arange(3, 5), paths[3:], [])
    write_json_atomic(out / INDEX_FILE, {"format": "safetensors", "num_shards": 2, "model": str(alta_folder), "complete": True})

    sheet = tmp_path / "hits.png"
    assert search_main(["--index", str(out), "--query", queries[0], "--query", queries[1], "--top-k", "3",
                        "--contact-sheet", str(sheet), "--json", "--device", "cpu"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["hits"][0]["path"] for r in results] == [paths[3], paths[1]]
    assert all(r["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5) for r in results)
    assert [h["rank"] for h in results[0]["hits"]] == [1, 2, 3]
    assert results[0]["hits"][1]["score"] < 0.9999
    for number in (1, 2):
        with Image.open(tmp_path / f"hits-{number}.png") as image:
            assert image.size == (3 * 224, 224 + 18) and image.getextrema()[1] > 0

    assert search_main(["--index", str(out), "--query", queries[0], "--top-k", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"query: {queries[0]}" and printed[1].split()[-1] == paths[3] and len(printed) == 3


def test_damaged_shard_is_named(tmp_path):
    path = shard_path(tmp_path, 0, "safetensors")
    path.write_bytes(b"garbage")
    from alta_hf.evaluation.image_index import ImageIndexError

    with pytest.raises(ImageIndexError, match="shard-00000.safetensors"):
        read_shard(path)
