"""Every builder's output folder has a dataset card with valid YAML metadata; restricted sources are never pushed;
the demo dataset's push and reload round-trip through the offline fake Hub with pictures."""

import re

import datasets
import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard, HfApi
from PIL import Image

from alta_hf.dataset_scripts import chexpert_5x200, chexpert_8x200, mimic_5x200, mimic_cxr, rsna
from alta_hf.dataset_scripts.dataset_card import RestrictedDatasetError, size_category
from alta_hf.dataset_scripts.dataset_hub import main as push_main
from alta_hf.dataset_scripts.dataset_hub import push_dataset_folder
from alta_hf.dataset_scripts.demo import DemoOptions, build_demo_data
from alta_hf.dataset_scripts.demo import main as demo_main
from alta_hf.dataset_scripts.shard_images import shard_images
from devtools.mimic_fixtures import write_mimic_fixture
from tests.fake_hub import FakeHub
from tests.fixtures_eval_sets import write_chexpert_5x200, write_convirt, write_rsna

TINY = DemoOptions(num_train_studies=8, num_validate_studies=2, num_eval_per_class=1, image_size=48, seed=5)
RESTRICTED = {"mimic_cxr", "mimic_5x200", "chexpert_5x200", "chexpert_8x200", "rsna"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "data"
    build_demo_data(out, TINY, num_workers=1)
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory, demo):
    """Output folder of every builder, made through its command line (shards from the demo's pre-training set)."""
    base = tmp_path_factory.mktemp("builders")
    folders = {"demo": demo, "demo/pretrain": demo / "pretrain", "demo/eval": demo / "eval"}
    write_chexpert_5x200(base / "5x200.csv", per_class=2, bad_rows=True)
    (base / "chexpert").mkdir()
    chexpert_5x200.main(["--csv", str(base / "5x200.csv"), "--chexpert-root", str(base / "chexpert"),
                         "--output-dir", str(base / "chexpert_5x200")])
    write_convirt(base / "convirt")
    chexpert_8x200.main(["--convirt-dir", str(base / "convirt"), "--chexpert-root", str(base / "chexpert"),
                         "--output-dir", str(base / "chexpert_8x200")])
    write_rsna(base / "rsna")
    rsna.main(["--root", str(base / "rsna"), "--output-dir", str(base / "rsna_out")])
    mimic = write_mimic_fixture(base / "mimic")
    mimic_inputs = ["--root", str(mimic.root), "--reports", str(mimic.reports)]
    mimic_cxr.main(mimic_inputs + ["--output-dir", str(base / "mimic_cxr")])
    mimic_5x200.main(mimic_inputs + ["--output-dir", str(base / "mimic_5x200"), "--splits", "train", "validate", "test",
                                     "--per-class", "1"])
    shard_images(demo / "pretrain", base / "shards", 32, num_proc=1)
    folders.update({name: base / folder for name, folder in (
        ("chexpert_5x200", "chexpert_5x200"), ("chexpert_8x200", "chexpert_8x200"), ("rsna", "rsna_out"),
        ("mimic_cxr", "mimic_cxr"), ("mimic_5x200", "mimic_5x200"), ("shard_images", "shards"))})
    return folders


def _front_matter(path) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", path.read_text(encoding="utf-8"), re.DOTALL)
    assert match, f"{path}: no YAML front matter"
    return yaml.safe_load(match.group(1))


def _saved_splits(folder) -> dict:
    if not (folder / "dataset_dict.json").is_file():  # the demo root: two datasets
        return {f"{name}/{split}": data for name in ("pretrain", "eval")
                for split, data in datasets.load_from_disk(str(folder / name)).items()}
    return dict(datasets.load_from_disk(str(folder)))


@pytest.mark.parametrize("builder", ["demo", "demo/pretrain", "demo/eval", "chexpert_5x200", "chexpert_8x200", "rsna",
                                     "mimic_cxr", "mimic_5x200", "shard_images"])
def test_every_builder_writes_a_card_with_valid_metadata(built, builder):
    card_path = built[builder] / "README.md"
    metadata = _front_matter(card_path)
    assert DatasetCard.load(card_path).data.to_dict() == metadata
    splits = _saved_splits(built[builder])
    assert metadata["license"] == ("other" if builder in RESTRICTED else "apache-2.0")
    assert metadata["task_categories"] and metadata["size_categories"] == [size_category(sum(
        s.num_rows for s in splits.values()))]
    infos = metadata["dataset_info"] if isinstance(metadata["dataset_info"], list) else [metadata["dataset_info"]]
    described = {}
    for info in infos:
        features = datasets.Features._from_yaml_list(info["features"])
        for split in info["splits"]:
            described[f"{info['config_name']}/{split['name']}" if "/" in next(iter(splits)) else split["name"]] = (
                features, split["num_examples"])
    assert described == {name: (split.features, split.num_rows) for name, split in splits.items()}
    text = card_path.read_text(encoding="utf-8")
    assert "## Provenance and selection rules" in text and "## Counts and skipped rows" in text
    assert str(built[builder].parent) not in text  # no local paths: the card does not depend on where it was built


def test_restricted_cards_state_the_agreement_and_counts(built):
    for builder in RESTRICTED:
        metadata, text = _front_matter(built[builder] / "README.md"), (built[builder] / "README.md").read_text()
        assert metadata["license_name"] and metadata["license_link"].startswith("https://")
        assert "Restricted: not for redistribution." in text and "agreement" in text.lower()
    text = (built["chexpert_5x200"] / "README.md").read_text()
    assert re.search(r"\| `skipped\.not_exactly_one_positive` \| [1-9]", text)  # the bad rows are counted
    assert "PhysioNet Credentialed Health Data Use Agreement" in (built["mimic_cxr"] / "README.md").read_text()
    assert "prior of a study" in (built["mimic_cxr"] / "README.md").read_text()  # the selection rules


@pytest.mark.parametrize("builder", sorted(RESTRICTED))
def test_restricted_folders_are_never_pushed(built, builder, capsys):
    with FakeHub().installed() as hub:
        with pytest.raises(RestrictedDatasetError, match="data-use agreement forbids redistribution"):
            push_dataset_folder(built[builder], "me/leak", token="hf_x")
        assert push_main([str(built[builder]), "me/leak"]) == 2
    assert "not pushed to the Hub" in capsys.readouterr().err
    assert hub.repos == {} and not [r for r in hub.requests if r[0] != "GET" or "agent" not in r[1]]


def test_demo_push_and_reload_round_trip_through_the_fake_hub(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with FakeHub().installed() as hub:
        # a second run on the same folder reuses the build, then pushes
        assert demo_main(["--output-dir", str(demo), "--num-train-studies", "8", "--num-validate-studies", "2",
                          "--num-eval-per-class", "1", "--image-size", "48", "--seed", "5", "--num-workers", "1",
                          "--push-to-hub", "me/alta-demo"]) == 0
        files = hub.files("datasets/me/alta-demo")
        assert {"README.md", "pretrain/train-00000-of-00001.parquet", "eval/test-00000-of-00001.parquet"} <= set(files)
        card = DatasetCard.load("me/alta-demo", repo_type="dataset")
        assert card.data.license == "apache-2.0" and "## Data-use terms" in card.text
        assert {c["config_name"] for c in card.data.configs} == {"pretrain", "eval"}
        assert HfApi().dataset_info("me/alta-demo").id == "me/alta-demo"

        pretrain = datasets.load_dataset("me/alta-demo", cache_dir=str(tmp_path / "cache"))
        evaluation = datasets.load_dataset("me/alta-demo", "eval", cache_dir=str(tmp_path / "cache"))
    local_pretrain = datasets.load_from_disk(str(demo / "pretrain"))
    local_eval = datasets.load_from_disk(str(demo / "eval"))
    assert list(pretrain) == list(local_pretrain) and list(evaluation) == list(local_eval)
    for split in local_pretrain:
        assert pretrain[split]["report"] == local_pretrain[split]["report"]
    row, local = pretrain["train"][0], local_pretrain["train"][0]
    assert isinstance(row["frontal_image"], Image.Image)
    assert np.array_equal(np.asarray(row["frontal_image"]), np.asarray(Image.open(demo / local["frontal_path"])))
    assert (row["lateral_image"] is None) == (local["lateral_path"] is None)
    test_row = evaluation["test"][0]
    assert test_row["label"] == local_eval["test"][0]["label"]
    assert np.array_equal(np.asarray(test_row["image"]), np.asarray(Image.open(demo / test_row["image_path"])))
