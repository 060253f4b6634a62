"""Reading the evaluation datasets built by `dataset_scripts` (layout: docs/design.md, "Datasets")."""

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EvaluationDataError", "EvalData", "load_eval_data"]

METADATA_FILE = "alta_dataset.json"


class EvaluationDataError(ValueError):
    """An evaluation dataset folder is missing, malformed or of the wrong kind; the message names it."""


@dataclass
class EvalData:
    """One evaluation dataset folder: the splits, its `alta_dataset.json` and the image root in use."""

    directory: Path
    dataset: "datasets.DatasetDict"  # noqa: F821 (imported lazily)
    metadata: dict
    image_root: Path

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    def split(self, name: str, columns: tuple[str, ...] = ()):
        if name not in self.dataset:
            raise EvaluationDataError(
                f"{self.directory}: no split {name!r}; available splits: {', '.join(self.dataset)}"
            )
        split = self.dataset[name]
        missing = [column for column in columns if column not in split.column_names]
        if missing:
            raise EvaluationDataError(
                f"{self.directory}: split {name!r} lacks column(s) {missing}; it has {split.column_names}"
            )
        return split

    def image_paths(self, split_name: str, column: str = "image_path") -> list[str]:
        """The split's image paths resolved against the image root (absolute paths are kept)."""
        return [str(self.image_root / path) for path in self.split(split_name, (column,))[column]]

    def class_names(self) -> list[str]:
        names = self.metadata.get("class_names")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise EvaluationDataError(f"{self.directory / METADATA_FILE}: 'class_names' must be a non-empty list of strings")
        return names

    def class_prompts(self) -> dict[str, list[str]]:
        """`class_prompts` in `class_names` order; every class needs at least one prompt."""
        prompts = self.metadata.get("class_prompts")
        if not isinstance(prompts, dict):
            raise EvaluationDataError(f"{self.directory / METADATA_FILE}: 'class_prompts' is missing or not an object")
        ordered = {}
        for name in self.class_names():
            entries = prompts.get(name)
            if not isinstance(entries, list) or not entries or not all(isinstance(p, str) for p in entries):
                raise EvaluationDataError(
                    f"{self.directory / METADATA_FILE}: class_prompts[{name!r}] must be a non-empty list of strings"
                )
            ordered[name] = entries
        return ordered

    def labels(self, split_name: str, column: str = "label") -> list[int]:
        """Integer labels of a split, checked against `class_names` (and the ClassLabel names, if any)."""
        split = self.split(split_name, (column,))
        names = self.class_names()
        feature = split.features[column]
        feature_names = getattr(feature, "names", None)
        if feature_names is not None and list(feature_names) != names:
            raise EvaluationDataError(
                f"{self.directory}: split {split_name!r} ClassLabel names {list(feature_names)} "
                f"differ from class_names {names} in {METADATA_FILE}"
            )
        labels = [int(value) for value in split[column]]
        bad = [(row, value) for row, value in enumerate(labels) if not 0 <= value < len(names)]
        if bad:
            row, value = bad[0]
            raise EvaluationDataError(
                f"{self.directory}: split {split_name!r} row {row} has label {value}, outside 0..{len(names) - 1}"
            )
        return labels


def load_eval_data(directory, image_root=None, expected_kind: str | None = None) -> EvalData:
    """Open an evaluation dataset folder (`save_to_disk` output + `alta_dataset.json`).

    Args:
        directory: the builder's `--output-dir`.
        image_root: overrides `image_root` from `alta_dataset.json` (images moved or mounted elsewhere).
        expected_kind: raise unless the folder's `kind` equals it.
    """
    import datasets  # deferred: only needed when a dataset is opened

    directory = Path(directory)
    metadata_path = directory / METADATA_FILE
    if not metadata_path.is_file():
        raise EvaluationDataError(
            f"{directory}: no {METADATA_FILE}; build the folder with the matching `python -m alta_hf.dataset_scripts.<name>`"
        )
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise EvaluationDataError(f"{metadata_path}: not valid JSON ({error})") from error
    except UnicodeDecodeError as error:
        raise EvaluationDataError(f"{metadata_path}: not UTF-8 text ({error}); save it as UTF-8") from error
    if not isinstance(metadata, dict) or "kind" not in metadata:
        raise EvaluationDataError(f"{metadata_path}: must be a JSON object with a 'kind' field")
    if expected_kind is not None and metadata["kind"] != expected_kind:
        raise EvaluationDataError(f"{directory} holds kind {metadata['kind']!r}, not {expected_kind!r}")
    try:
        dataset = datasets.load_from_disk(str(directory))
    except FileNotFoundError as error:
        raise EvaluationDataError(f"{directory}: not a dataset saved with save_to_disk ({error})") from error
    if not isinstance(dataset, datasets.DatasetDict):
        raise EvaluationDataError(f"{directory}: expected a DatasetDict with named splits, found a single Dataset")
    if image_root is not None:
        root = Path(image_root).resolve()
    elif metadata.get("image_root") is not None:
        # A relative root in the metadata is relative to the dataset folder, so a folder shipped
        # together with its images still works after a move.
        root = directory / metadata["image_root"]
    else:
        raise EvaluationDataError(f"{metadata_path}: no 'image_root'; pass the image root explicitly")
    return EvalData(directory=directory, dataset=dataset, metadata=metadata, image_root=root)
