"""Dataset cards (`README.md` with YAML metadata) for every folder the builders write, and the rule that decides
which folders may go to the Hub.

The data-use terms follow from the source the rows come from (`data_terms(meta)`): MIMIC-CXR, CheXpert and RSNA
(Kaggle) data are licensed to the individual user under a data-use agreement, so their cards say so and
`ensure_shareable` refuses to push them; only the synthetic demo data may be shared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

__all__ = [
    "CARD_FILE",
    "DATA_TERMS",
    "DataTerms",
    "RestrictedDatasetError",
    "build_dataset_card",
    "data_terms",
    "ensure_shareable",
    "size_category",
    "write_dataset_card",
]

CARD_FILE = "README.md"


@dataclass(frozen=True)
class DataTerms:
    """Who may use the rows, and whether a derived folder may be redistributed."""

    source: str
    url: str
    license: str  # a Hub licence id; "other" with `license_name` / `license_link` for data-use agreements
    terms: str
    restricted: bool
    license_name: str | None = None
    license_link: str | None = None


_AGREEMENT = (
    "Derived rows (paths, labels, report text) fall under the same agreement: use them only under your own "
    "credentialed access, do not share them, and do not upload this folder to the Hugging Face Hub or anywhere "
    "else (alta-hf refuses to push it)."
)


def _under_agreement(source: str, url: str, license_name: str, license_link: str, terms: str) -> DataTerms:
    return DataTerms(source=source, url=url, license="other", license_name=license_name, license_link=license_link,
                     terms=f"{terms} {_AGREEMENT}", restricted=True)


DATA_TERMS = {
    "mimic-cxr": _under_agreement(
        "MIMIC-CXR / MIMIC-CXR-JPG (PhysioNet)", "https://physionet.org/content/mimic-cxr-jpg/",
        "physionet-credentialed-health-data-1.5.0", "https://physionet.org/content/mimic-cxr/view-license/2.0.0/",
        "MIMIC-CXR is credentialed data: access requires a PhysioNet account, CITI training and signing the "
        "PhysioNet Credentialed Health Data Use Agreement 1.5.0.",
    ),
    "chexpert": _under_agreement(
        "CheXpert (Stanford AIMI)", "https://stanfordmlgroup.github.io/competitions/chexpert/",
        "stanford-chexpert-research-use-agreement",
        "https://stanfordaimi.azurewebsites.net/datasets/8cbd9ed4-2eb9-4565-affc-111cf4f7ebe2",
        "CheXpert is released under the Stanford University School of Medicine CheXpert Dataset Research Use "
        "Agreement (personal, non-commercial research use; no redistribution).",
    ),
    "rsna": _under_agreement(
        "RSNA Pneumonia Detection Challenge (Kaggle; images from NIH ChestX-ray14)",
        "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge", "rsna-pneumonia-detection-challenge-rules",
        "https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/rules",
        "The RSNA Pneumonia Detection Challenge data are available under the competition's rules and data-use terms, "
        "accepted by each user on Kaggle.",
    ),
    "synthetic": DataTerms(
        source="alta-hf's synthetic demo generator (`dataset_scripts.demo`): drawn phantoms and templated reports, "
               "no patient data",
        url="", license="apache-2.0", restricted=False,
        terms="Synthetic data made by alta-hf's demo generator (Apache-2.0, as the code); free to share.",
    ),
}
# what each kind of folder is made of (`alta_dataset.json`'s `kind`); pre-training folders say it by their builder
_TERMS_OF_KIND = {"chexpert_5x200": "chexpert", "chexpert_8x200": "chexpert", "mimic_5x200": "mimic-cxr",
                  "rsna": "rsna", "demo": "synthetic"}
_TASKS_OF_KIND = {
    "pretraining": ["image-to-text", "image-feature-extraction"],
    "chexpert_8x200": ["image-feature-extraction", "text-to-image"],
    "classification": ["image-classification"],
}
_EVALUATION_TASKS = ["zero-shot-image-classification", "image-feature-extraction"]
# local paths say nothing to a reader of the card and would make it depend on where it was built
_LOCAL_KEYS = {"image_root", "tokenizer_dir", "source", "sources", "reports", "shard_source", "shard_plan",
               "class_prompts"}


class RestrictedDatasetError(PermissionError):
    """A folder whose data-use agreement forbids redistribution was about to be pushed."""


def data_terms(meta: Mapping) -> DataTerms:
    """The terms of a built folder's rows, from its `alta_dataset.json`; unknown origins count as restricted."""
    name = meta.get("data_terms") or _TERMS_OF_KIND.get(meta.get("kind"))
    if name is None and meta.get("kind") == "pretraining":
        name = "synthetic" if "generator" in meta else "mimic-cxr"
    if name in DATA_TERMS:
        return DATA_TERMS[name]
    return DataTerms(source="unknown", url="", license="other", license_name="unknown", restricted=True,
                     terms=f"The origin of these rows is not recorded; treat them as restricted. {_AGREEMENT}")


def ensure_shareable(folder: os.PathLike | str, meta: Mapping) -> None:
    """Raise `RestrictedDatasetError` unless the folder's rows may be redistributed."""
    terms = data_terms(meta)
    if terms.restricted:
        raise RestrictedDatasetError(
            f"{folder}: derived from {terms.source}, whose data-use agreement forbids redistribution; "
            "it is not pushed to the Hub"
        )


def size_category(num_rows: int) -> str:
    """The Hub's `size_categories` bucket of a row count."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                         (10_000_000, "1M<n<10M")):
        if num_rows < limit:
            return label
    return "n>10M" if num_rows >= 1_000_000_000 else "10M<n<100M"


def _splits(dataset) -> dict[str, datasets.Dataset]:
    return dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {str(dataset.split or "train"): dataset}


def _dataset_info(splits: dict[str, datasets.Dataset]):
    """`dataset_info` as `datasets` writes it. Splits named `config/split` form configuration `config`; otherwise
    splits with different columns become one configuration each (named by their splits)."""
    groups: dict[str, list[str]] = {}
    for name, split in splits.items():
        key = name.split("/")[0] if "/" in name else json.dumps(split.features.to_dict(), sort_keys=True)
        groups.setdefault(key, []).append(name)
    infos = [
        {
            "config_name": key if "/" in names[0] else "+".join(names),
            "features": splits[names[0]].features._to_yaml_list(),
            "splits": [{"name": name.split("/")[-1], "num_examples": splits[name].num_rows} for name in names],
        }
        for key, names in groups.items()
    ]
    if len(infos) == 1:
        return {key: value for key, value in infos[0].items() if key != "config_name"}
    return infos


def _flatten(summary: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in summary.items():
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, f"{prefix}{key}."))
        elif not isinstance(value, list):
            rows.append((f"{prefix}{key}", value))
    return rows


def build_dataset_card(dataset, meta: Mapping, summary: Mapping, title: str | None = None,
                       description: str | None = None) -> DatasetCard:
    """The card of a built folder: YAML metadata (licence or data-use terms, task categories, size category,
    features and splits) and a body with the provenance, the selection rules (`description`, the builder's
    documentation), the counts and skipped rows of `summary`, and the columns."""
    splits = _splits(dataset)
    kind = str(meta.get("kind", "dataset"))
    terms = data_terms(meta)
    total = sum(split.num_rows for split in splits.values())
    extra = {key: value for key, value in (("license_name", terms.license_name), ("license_link", terms.license_link))
             if value}
    card_data = DatasetCardData(
        license=terms.license,
        pretty_name=title or kind,
        task_categories=_TASKS_OF_KIND.get(kind, _EVALUATION_TASKS),
        size_categories=[size_category(total)],
        language=["en"],
        tags=["medical", "chest-x-ray", "radiology", "alta"] + (["synthetic"] if not terms.restricted else []),
        dataset_info=_dataset_info(splits),
        **extra,
    )
    parameters = {key: value for key, value in meta.items() if key not in _LOCAL_KEYS}
    counts = "\n".join(f"| `{name}` | {value} |" for name, value in _flatten(summary))
    columns = "\n".join(
        f"| {split_name} | `{column}` | `{feature!r}` |"
        for split_name, split in splits.items() for column, feature in split.features.items()
    )
    lines = [
        "---", card_data.to_yaml(), "---", "",
        f"# {title or kind}", "",
        "## Data-use terms", "",
        f"**{'Restricted: not for redistribution.' if terms.restricted else 'Shareable.'}** {terms.terms}",
        f"Source: [{terms.source}]({terms.url})." if terms.url else f"Source: {terms.source}.", "",
        "## Provenance and selection rules", "",
        f"Built by alta-hf's `dataset_scripts` (folder kind `{kind}`), {total:,} rows in "
        f"{len(splits)} split(s): " + ", ".join(f"`{n}` ({s.num_rows:,})" for n, s in splits.items()) + ".", "",
    ]
    if description:
        lines += ["```text", description.strip(), "```", ""]
    lines += [
        "Build parameters (`alta_dataset.json`, local paths left out):", "",
        "```json", json.dumps(parameters, indent=2, sort_keys=True, default=str), "```", "",
        "## Counts and skipped rows", "",
        "From `build_summary.json`:", "",
        "| count | value |", "|---|---|", counts or "| (none) | |", "",
        "## Columns", "",
        "| split | column | feature |", "|---|---|---|", columns, "",
    ]
    return DatasetCard("\n".join(lines))


def write_dataset_card(folder: os.PathLike | str, dataset, meta: Mapping, summary: Mapping,
                       title: str | None = None, description: str | None = None) -> Path:
    path = Path(folder) / CARD_FILE
    build_dataset_card(dataset, meta, summary, title, description).save(path)
    return path

