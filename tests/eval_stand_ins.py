"""Stand-ins for the evaluation tests: a concept model, its processor, and fixture datasets in the real layouts.

The model sees a radiograph's dominant gray level as one of `CONCEPTS` and a text as the sum of the
concept words it contains, so every expected metric can be worked out by hand:
- image feature: `exp(-2 (c - j)^2)` over concepts `j`, where `c` is the image's concept index
  (identical images give bit-identical features, hence exact ties);
- text feature: one-hot rows summed over the concept words of the text (other words count zero).

`install_processing_stand_ins` fills in the `processing` functions evaluation imports
(`load_radiograph`, `RadiographLoadError`, `clean_report_gloria`) only where the processing package
does not provide them yet; once it does, the tests run against the real ones.
"""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

CONCEPTS = ["atelectasis", "cardiomegaly", "consolidation", "edema", "effusion",
            "fracture", "finding", "pneumonia", "pneumothorax", "no"]
GRAY_BASE, GRAY_STEP = 20, 22
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
VOCAB = {token: index for index, token in enumerate(SPECIALS + CONCEPTS)}


def gray_level(concept: str) -> int:
    return GRAY_BASE + GRAY_STEP * CONCEPTS.index(concept)


class StandInLoadError(ValueError):
    pass


def stand_in_load_radiograph(source, *, min_size=None):
    """What processing.load_radiograph does, for the formats the fixtures use (PNG, 8-bit DICOM)."""
    if isinstance(source, Image.Image):
        return source.convert("L")
    path = Path(source)
    try:
        if path.suffix.lower() == ".dcm":
            import pydicom

            dataset = pydicom.dcmread(path)
            pixels = dataset.pixel_array.astype(np.float64)
            pixels = pixels * (255.0 / pixels.max())
            if dataset.PhotometricInterpretation == "MONOCHROME1":
                pixels = 255.0 - pixels
            return Image.fromarray(np.round(pixels).astype(np.uint8), mode="L")
        with Image.open(path) as image:
            return image.convert("L")
    except Exception as error:  # the stand-in maps every decoding failure to the one contract type
        raise StandInLoadError(f"{path}: cannot read radiograph ({error})") from error


def stand_in_clean_report_gloria(text: str) -> str:
    """GLoRIA-style cleaning as docs/evaluation.md ("Text cleaning") describes it."""
    sentences = []
    for point in re.split(r"[0-9]+\.", text.replace("\n", " ")):
        for sentence in point.split("."):
            words = re.findall(r"\w+", sentence.replace("\ufffd\ufffd", " ").lower())
            if len(words) <= 1:
                continue
            ascii_words = [w.encode("ascii", "ignore").decode("ascii") for w in words]
            sentences.append(" ".join(w for w in ascii_words if w))
    return " ".join(sentences)


def install_processing_stand_ins(monkeypatch) -> None:
    from alta_hf import processing

    if not hasattr(processing, "load_radiograph") or not hasattr(processing, "RadiographLoadError"):
        monkeypatch.setattr(processing, "load_radiograph", stand_in_load_radiograph, raising=False)
        monkeypatch.setattr(processing, "RadiographLoadError", StandInLoadError, raising=False)
    if not hasattr(processing, "clean_report_gloria"):
        monkeypatch.setattr(processing, "clean_report_gloria", stand_in_clean_report_gloria, raising=False)


class ConceptProcessor:
    """Processor stand-in: images to `[B,3,S,S]` in [0,1]; texts to word ids of `VOCAB`."""

    def __init__(self, image_size: int = 16, default_max_length: int = 16):
        self.image_size = image_size
        self.default_max_length = default_max_length
        self.image_processor = SimpleNamespace(size={"shortest_edge": image_size})

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "default_max_length": self.default_max_length, "vocab": VOCAB}

    def _tokens(self, text: str) -> list[int]:
        return [VOCAB["[CLS]"], *(VOCAB.get(word, VOCAB["[UNK]"]) for word in re.findall(r"\w+", text.lower())), VOCAB["[SEP]"]]

    def __call__(self, images=None, text=None, return_tensors="pt", padding=False, max_length=None, truncation=False):
        if images is not None:
            arrays = [np.asarray(image.convert("L").resize((self.image_size,) * 2, Image.BILINEAR), dtype=np.float32) / 255 for image in images]
            pixels = torch.from_numpy(np.stack(arrays))[:, None].expand(-1, 3, -1, -1).contiguous()
            return {"pixel_values": pixels}
        ids = [self._tokens(t) for t in text]
        if padding == "max_length" and max_length is None:
            max_length = self.default_max_length
        if truncation and max_length is not None:
            ids = [row[:max_length] for row in ids]
        width = max(len(row) for row in ids)
        if padding == "max_length":
            width = max(width, max_length)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        attention_mask = torch.zeros(len(ids), width, dtype=torch.long)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = torch.tensor(tokens)
            attention_mask[row, : len(tokens)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class ConceptModel(torch.nn.Module):
    """Model stand-in with the AltaModel inference interface; counts its calls."""

    def __init__(self, text_positions: int = 32):
        super().__init__()
        self.config = SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=text_positions))
        self.word_embeddings = torch.nn.Embedding(len(VOCAB), len(CONCEPTS))
        with torch.no_grad():
            self.word_embeddings.weight.zero_()
            for index, concept in enumerate(CONCEPTS):
                self.word_embeddings.weight[VOCAB[concept], index] = 1.0
        self.concept_axis = torch.nn.Parameter(torch.arange(len(CONCEPTS), dtype=torch.float32), requires_grad=False)
        self.image_calls = 0
        self.text_calls = 0

    def get_image_features(self, pixel_values):
        self.image_calls += 1
        gray = pixel_values[:, 0].flatten(1).median(dim=1).values * 255
        concept = torch.round((gray - GRAY_BASE) / GRAY_STEP)
        return torch.exp(-2 * (concept[:, None] - self.concept_axis[None, :]) ** 2)

    def get_text_features(self, input_ids, attention_mask):
        self.text_calls += 1
        if input_ids.shape[1] > self.config.text_config.max_position_embeddings:
            raise IndexError(f"{input_ids.shape[1]} tokens exceed the position table")
        return (self.word_embeddings(input_ids) * attention_mask[..., None]).sum(dim=1)


def write_radiograph(path: Path, concept: str, size: int = 24) -> str:
    """A uniform image of the concept's gray level with one white pixel (so DICOM max-scaling keeps it)."""
    pixels = np.full((size, size), gray_level(concept), dtype=np.uint8)
    pixels[0, 0] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dcm":
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        dataset.Rows, dataset.Columns = pixels.shape
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
        dataset.PixelData = pixels.tobytes()
        dataset.save_as(path, enforce_file_format=True)
    else:
        Image.fromarray(pixels, mode="L").save(path)
    return str(path)


def _save(out: Path, splits: dict, metadata: dict) -> Path:
    """`save_to_disk` + `alta_dataset.json`, as the dataset builders write them."""
    import datasets

    datasets.DatasetDict(splits).save_to_disk(str(out))
    (out / "alta_dataset.json").write_text(json.dumps(metadata), encoding="utf-8")
    return out


def _split(rows: list[dict], class_names: list[str], **columns) -> "datasets.Dataset":
    import datasets

    features = datasets.Features({**columns, "label": datasets.ClassLabel(names=class_names)})
    return datasets.Dataset.from_list(rows, features=features)


CHEXPERT_8X200 = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Edema": "edema",
                  "Fracture": "fracture", "No Finding": "finding", "Pleural Effusion": "effusion",
                  "Pneumonia": "pneumonia", "Pneumothorax": "pneumothorax"}
CHEXPERT_5X200 = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Consolidation": "consolidation",
                  "Edema": "edema", "Pleural Effusion": "effusion"}
DEMO = {"Cardiomegaly": "cardiomegaly", "Edema": "edema", "Pneumothorax": "pneumothorax"}


def make_chexpert_8x200(root: Path, per_class: int = 7, queries_per_class: int = 2) -> Path:
    """Candidates/image queries/text queries; every class has its own concept."""
    import datasets

    names, images = list(CHEXPERT_8X200), root / "images"
    candidates, image_queries, text_queries = [], [], []
    for label, (name, concept) in enumerate(CHEXPERT_8X200.items()):
        for i in range(per_class):
            write_radiograph(images / f"cand_{label}_{i}.png", concept)
            candidates.append({"image_path": f"images/cand_{label}_{i}.png", "label": label})
        for i in range(queries_per_class):
            write_radiograph(images / f"query_{label}_{i}.png", concept)
            image_queries.append({"image_path": f"images/query_{label}_{i}.png", "label": label})
        words = "No acute finding" if concept == "finding" else f"There is {concept} present."
        text_queries.append({"text": words, "label": label})
    image_features = {"image_path": datasets.Value("string")}
    return _save(root / "chexpert_8x200", {
        "candidates": _split(candidates, names, **image_features),
        "image_queries": _split(image_queries, names, **image_features),
        "text_queries": _split(text_queries, names, text=datasets.Value("string")),
    }, {"kind": "chexpert_8x200", "image_root": str(root), "class_names": names})


def _report_rows(root: Path, classes: dict, per_class: int, prefix: str, drawn_as: dict | None = None) -> list[dict]:
    rows, drawn_as = [], drawn_as or {}
    for label, (name, concept) in enumerate(classes.items()):
        for i in range(per_class):
            relative = f"images/{prefix}_{label}_{i}.png"
            write_radiograph(root / relative, drawn_as.get((label, i), concept))
            rows.append({"image_path": relative, "label": label, "report": f"\n1. mild {concept} seen.\n2. stable since prior.\n"})
    return rows


def _prompts(classes: dict) -> dict:
    # Duplicates are kept on purpose: the real 5x200 prompt set repeats some combinations.
    return {name: [f"mild {concept}", f"{concept} at the lung bases", f"{concept} at the lung bases"] for name, concept in classes.items()}


def make_chexpert_5x200(root: Path, per_class: int = 4) -> Path:
    """20 images; image 0 of Atelectasis is drawn as Cardiomegaly (the one zero-shot error)."""
    import datasets

    names = list(CHEXPERT_5X200)
    rows = _report_rows(root, CHEXPERT_5X200, per_class, "c5", drawn_as={(0, 0): "cardiomegaly"})
    split = _split(rows, names, image_path=datasets.Value("string"), report=datasets.Value("string"))
    return _save(root / "chexpert_5x200", {"test": split},
                 {"kind": "chexpert_5x200", "image_root": str(root), "class_names": names, "class_prompts": _prompts(CHEXPERT_5X200)})


def make_mimic_5x200(root: Path, per_class: int = 3) -> Path:
    import datasets

    names = list(CHEXPERT_5X200)
    rows = _report_rows(root, CHEXPERT_5X200, per_class, "m5")
    split = _split(rows, names, image_path=datasets.Value("string"), report=datasets.Value("string"))
    return _save(root / "mimic_5x200", {"test": split},
                 {"kind": "mimic_5x200", "image_root": str(root), "class_names": names, "class_prompts": _prompts(CHEXPERT_5X200)})


def make_demo(root: Path, per_class: int = 4) -> Path:
    import datasets

    names = list(DEMO)
    features = dict(image_path=datasets.Value("string"), report=datasets.Value("string"))
    splits = {split: _split(_report_rows(root, DEMO, per_class, f"demo_{split}"), names, **features) for split in ("validation", "test")}
    return _save(root / "demo", splits, {"kind": "demo", "image_root": str(root), "class_names": names, "class_prompts": _prompts(DEMO)})


def make_rsna(root: Path, per_class: int = 10, corrupt: bool = True) -> Path:
    """DICOMs: negatives drawn as 'no', positives as 'pneumonia' except positive 0 (drawn as 'no');
    plus one corrupt DICOM (label 1) that must be skipped."""
    import datasets

    names = ["no pneumonia", "pneumonia"]
    rows = []
    for label, concept in ((0, "no"), (1, "pneumonia")):
        for i in range(per_class):
            relative = f"stage_2_test_images/{label}_{i}.dcm"
            write_radiograph(root / relative, "no" if (label, i) == (1, 0) else concept)
            rows.append({"image_path": relative, "label": label})
    if corrupt:
        (root / "stage_2_test_images" / "corrupt.dcm").write_bytes(b"not a dicom file")
        rows.append({"image_path": "stage_2_test_images/corrupt.dcm", "label": 1})
    split = _split(rows, names, image_path=datasets.Value("string"))
    prompts = {"pneumonia": ["There is pneumonia"], "no pneumonia": ["There is no pneumonia"]}
    return _save(root / "rsna", {"validation": split, "test": split},
                 {"kind": "rsna", "image_root": str(root), "class_names": names, "class_prompts": prompts})


def save_tiny_clip(folder: Path, with_processor: bool = True) -> Path:
    """A tiny random CLIP (same get_*_features interface as AltaModel) + processor, saved like a model folder.

    Stands in for a saved ALTA folder in the CLI and Hub tests until the real model is merged.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "there", "is", "no", *CONCEPTS[:-1]]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", model_max_length=24)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                            image_mean=[0.4785] * 3, image_std=[0.2834] * 3)
    tower = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tower, vocab_size=len(words), max_position_embeddings=32, bos_token_id=2, eos_token_id=3, pad_token_id=0),
        vision_config=dict(tower, image_size=32, patch_size=16),
        projection_dim=8,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    if with_processor:
        CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
