"""Embedding (batching, skipping bad images, tokenisation rules, class means) and the embedding cache."""

import logging

import pytest
import torch

from alta_hf.evaluation.cache import EmbeddingCache, fingerprint_files, fingerprint_model_dir, fingerprint_module
from alta_hf.evaluation.embedding import embed_images, embed_texts, mean_class_embeddings
from tests import eval_stand_ins as stand_ins


class RecordingModel(stand_ins.ConceptModel):
    def __init__(self, text_positions=32):
        super().__init__(text_positions)
        self.text_shapes = []

    def get_text_features(self, input_ids, attention_mask):
        self.text_shapes.append(tuple(input_ids.shape))
        return super().get_text_features(input_ids, attention_mask)


def _images(tmp_path, concepts):
    return [stand_ins.write_radiograph(tmp_path / f"{i}.png", concept) for i, concept in enumerate(concepts)]


def test_embed_images_is_batch_invariant_and_skips_unreadable_files(tmp_path, processing_stand_ins, caplog):
    paths = _images(tmp_path, ["edema", "fracture", "no", "edema"])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    sources = paths[:2] + [str(tmp_path / "broken.png")] + paths[2:]
    model = stand_ins.ConceptModel()
    with caplog.at_level(logging.WARNING):
        one = embed_images(model, stand_ins.ConceptProcessor(), sources, batch_size=1, progress=False)
    three = embed_images(model, stand_ins.ConceptProcessor(), sources, batch_size=3, progress=False)
    assert one.indices.tolist() == three.indices.tolist() == [0, 1, 3, 4]
    assert torch.equal(one.embeddings, three.embeddings)
    assert [f["index"] for f in one.failures] == [2] and one.failures[0]["source"].endswith("broken.png")
    assert "broken.png" in caplog.text
    # concept index of each loaded image is the argmax of its feature
    assert one.embeddings.argmax(dim=1).tolist() == [stand_ins.CONCEPTS.index(c) for c in ["edema", "fracture", "no", "edema"]]
    assert not one.embeddings.requires_grad and one.embeddings.dtype == torch.float32


def test_embed_images_accepts_in_memory_images(processing_stand_ins, tmp_path):
    path = _images(tmp_path, ["effusion"])[0]
    from PIL import Image

    with Image.open(path) as image:
        result = embed_images(stand_ins.ConceptModel(), stand_ins.ConceptProcessor(), [image.copy()], progress=False)
    assert result.embeddings.argmax().item() == stand_ins.CONCEPTS.index("effusion")


def test_draft_decode_passes_the_processor_size(monkeypatch, tmp_path):
    from alta_hf import processing

    seen = []

    def recording_loader(source, *, min_size=None):
        seen.append(min_size)
        return stand_ins.stand_in_load_radiograph(source)

    monkeypatch.setattr(processing, "load_radiograph", recording_loader, raising=False)
    monkeypatch.setattr(processing, "RadiographLoadError", stand_ins.StandInLoadError, raising=False)
    paths = _images(tmp_path, ["edema"])
    embed_images(stand_ins.ConceptModel(), stand_ins.ConceptProcessor(image_size=16), paths, progress=False)
    embed_images(stand_ins.ConceptModel(), stand_ins.ConceptProcessor(image_size=16), paths, progress=False, draft_decode=True)
    assert seen == [None, 16]


def test_embed_texts_padding_and_truncation_rules():
    long_text = " ".join(["word"] * 24 + ["edema"])  # 27 tokens with [CLS]/[SEP]; the keyword is token 26
    edema = stand_ins.CONCEPTS.index("edema")
    model = RecordingModel(text_positions=32)
    kept = embed_texts(model, stand_ins.ConceptProcessor(), [long_text, "edema"], max_length=20, truncation=False, progress=False)
    assert model.text_shapes[-1] == (2, 27)  # never cut below the model's limit: the keyword counts
    assert kept[0, edema] == 1.0 and kept[1, edema] == 1.0
    cut = embed_texts(model, stand_ins.ConceptProcessor(), [long_text], max_length=20, truncation=True, progress=False)
    assert model.text_shapes[-1] == (1, 20) and cut.abs().sum() == 0
    embed_texts(model, stand_ins.ConceptProcessor(), ["edema"], max_length=20, truncation=False, progress=False)
    assert model.text_shapes[-1] == (1, 20)  # short texts are padded to the protocol length
    embed_texts(model, stand_ins.ConceptProcessor(default_max_length=12), ["edema"], progress=False)
    assert model.text_shapes[-1] == (1, 12)  # max_length None: the processor's default


def test_embed_texts_respects_the_model_position_limit(caplog):
    model = RecordingModel(text_positions=8)
    with caplog.at_level(logging.WARNING):
        embed_texts(model, stand_ins.ConceptProcessor(), ["a b c d e f g h i j edema"], max_length=20, truncation=False, progress=False)
    assert model.text_shapes == [(1, 8)]
    assert "exceeds the model's 8 positions" in caplog.text


def test_embed_texts_batches_give_the_same_result():
    texts = ["edema", "mild fracture", "no pneumonia", "effusion left", "nothing"]
    model = stand_ins.ConceptModel()
    one = embed_texts(model, stand_ins.ConceptProcessor(), texts, batch_size=1, max_length=10, progress=False)
    two = embed_texts(model, stand_ins.ConceptProcessor(), texts, batch_size=2, max_length=10, progress=False)
    assert torch.equal(one, two) and one.shape == (5, len(stand_ins.CONCEPTS))


def test_mean_class_embeddings_average_unnormalised_then_normalise():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.0, 2.0]])
    classes = mean_class_embeddings(embeddings, [0, 0, 1], num_classes=2)
    # class 0: mean (0.5, 1.5) -> (1, 3)/sqrt(10); normalising first would give (1, 1)/sqrt(2)
    assert torch.allclose(classes[0], torch.tensor([1.0, 3.0]) / 10**0.5)
    assert torch.allclose(classes[1], torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="at least one prompt"):
        mean_class_embeddings(embeddings, [0, 0, 0], num_classes=2)


def test_fingerprints_follow_content(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights-1")
    base = fingerprint_model_dir(folder)
    (folder / "README.md").write_text("a card")
    (folder / "roc_curve.png").write_bytes(b"png")
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "optimizer.bin").write_bytes(b"state")
    assert fingerprint_model_dir(folder) == base  # documentation, plots and sub-folders do not count
    (folder / "model.safetensors").write_bytes(b"weights-2")
    assert fingerprint_model_dir(folder) != base

    image = tmp_path / "x.png"
    image.write_bytes(b"1")
    before = fingerprint_files([str(image)])
    image.write_bytes(b"12")
    assert fingerprint_files([str(image)]) != before

    model = stand_ins.ConceptModel()
    same = fingerprint_module(model)
    assert fingerprint_module(stand_ins.ConceptModel()) == same
    with torch.no_grad():
        model.word_embeddings.weight[5, 0] = 0.5
    assert fingerprint_module(model) != same


def test_embedding_cache_round_trip_and_damaged_entries(tmp_path, caplog):
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.load("k") is None
    tensors = {"embeddings": torch.arange(6.0).view(2, 3), "indices": torch.tensor([0, 2])}
    cache.save("k", tensors, {"failures": [{"index": 1, "source": "x.png", "error": "bad"}]})
    loaded, metadata = cache.load("k")
    assert torch.equal(loaded["embeddings"], tensors["embeddings"]) and torch.equal(loaded["indices"], tensors["indices"])
    assert metadata == {"failures": [{"index": 1, "source": "x.png", "error": "bad"}]}
    assert not list((tmp_path / "cache").glob("*.tmp*"))
    (tmp_path / "cache" / "k.safetensors").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        assert cache.load("k") is None
    assert "unreadable embedding cache entry" in caplog.text
