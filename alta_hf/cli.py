"""The console commands (`alta-train`, `alta-eval`, ...): one table, read by setup.py for the entry points.

Each command runs the `main(argv)` of its module, exactly like `python -m <module>`; a `main` that returns a result
(a dict, a path) instead of an exit status counts as success. Modules are imported only when their command runs.
"""

import importlib
import sys

# command -> (module under alta_hf, what it does)
COMMANDS = {
    "alta-train": ("training.loop", "pre-train ALTA with Accelerate (the train.py loop)"),
    "alta-eval": ("evaluation.cli", "zero-shot classification and retrieval with the paper's protocols"),
    "alta-demo": ("training.demo", "the demo: demo towers, ALTA training, evaluation"),
    "alta-finetune": ("training.finetune", "fine-tune or linearly probe a classifier on labelled images"),
    "alta-convert-official": ("modeling_alta.convert_original_alta", "convert the official ALTA.pth"),
    "alta-convert-towers": ("modeling_alta.convert_pretrained_towers", "build ALTA's start from MRM.pth + CXR-BERT"),
    "alta-write-processor": ("processing.write_processor", "add a processor to an older model folder"),
    "alta-build-mimic-cxr": ("dataset_scripts.mimic_cxr", "the MIMIC-CXR-JPG pre-training set"),
    "alta-build-chexpert-5x200": ("dataset_scripts.chexpert_5x200", "the CheXpert 5x200 evaluation set"),
    "alta-build-chexpert-8x200": ("dataset_scripts.chexpert_8x200", "the CheXpert 8x200 evaluation set"),
    "alta-build-mimic-5x200": ("dataset_scripts.mimic_5x200", "the MIMIC 5x200 evaluation set"),
    "alta-build-rsna": ("dataset_scripts.rsna", "the RSNA Pneumonia evaluation set"),
    "alta-build-demo": ("dataset_scripts.demo", "the synthetic demo data (optionally pushed to the Hub)"),
    "alta-build-chexpert-classification": ("dataset_scripts.chexpert_classification", "labelled CheXpert set"),
    "alta-build-nih-chestxray14": ("dataset_scripts.nih_chestxray14", "labelled NIH ChestX-ray14 set"),
    "alta-build-rsna-classification": ("dataset_scripts.rsna_classification", "labelled RSNA Pneumonia set"),
    "alta-build-demo-classification": ("dataset_scripts.demo_classification", "labelled demo set"),
    "alta-export-official-csv": ("dataset_scripts.export_official_csv", "the official code's train.csv"),
    "alta-shard-images": ("dataset_scripts.shard_images", "pre-resized image shards of a pre-training set"),
    "alta-push-dataset": ("dataset_scripts.dataset_hub", "push a dataset folder with its card to the Hub"),
    "alta-pictures": ("evaluation.pictures", "word-region attention and reconstruction pictures"),
    "alta-push-model": ("evaluation.hub", "push a model folder with its card to the Hub"),
    "alta-embed": ("evaluation.embed", "embed an archive of radiographs once"),
    "alta-search": ("evaluation.search", "search an embedding index with a sentence"),
}


def run(command: str, argv=None) -> int:
    module = importlib.import_module(f"{__package__}.{COMMANDS[command][0]}")
    result = module.main(sys.argv[1:] if argv is None else argv)
    return result if isinstance(result, int) else 0


def _entry_point(command: str):
    def entry() -> None:
        sys.exit(run(command))

    entry.__name__ = entry.__qualname__ = command.replace("-", "_")
    entry.__doc__ = COMMANDS[command][1]
    return entry


for _command in COMMANDS:
    globals()[_command.replace("-", "_")] = _entry_point(_command)
