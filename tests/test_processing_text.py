"""Report text: sentence shuffling (on 3,955 real reports), GLoRIA cleaning, MLM corruption, training samples, collation."""

import re

import pytest
import torch
from transformers import BertTokenizer

from alta_hf.processing import (
    PRETRAINING_KEYS,
    AltaImageProcessor,
    AltaPreTrainingCollator,
    AltaProcessor,
    clean_report_gloria,
    shuffle_sentences,
    split_sentences,
)

NIH_PNG = "images/nih_cxr14/00000001_000.png"
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4


@pytest.fixture(scope="module")
def tokenizer(golden_dir):
    return BertTokenizer(vocab=str(golden_dir / "BiomedVLP-CXR-BERT-specialized" / "vocab.txt"), model_max_length=128)


@pytest.fixture(scope="module")
def real_reports(indiana_reports):
    return indiana_reports


def test_sentence_split_keeps_abbreviations():
    text = "Mild edema, e.g. in the bases. Discussed with Dr. Smith today. Is there effusion? No."
    assert split_sentences(text) == ["Mild edema, e.g. in the bases.", "Discussed with Dr. Smith today.",
                                     "Is there effusion?", "No."]


def test_shuffle_on_real_reports_keeps_every_sentence(real_reports):
    assert len(real_reports) > 3900
    generator = torch.Generator().manual_seed(0)
    reordered = 0
    for report in real_reports:
        shuffled = shuffle_sentences(report, generator)
        # every sentence survives whole (a sentence without a final period may run into the next one after shuffling,
        # as in the official pipeline, so compare words and sentences, not a re-split)
        assert sorted(shuffled.split()) == sorted(report.split())
        assert all(sentence in shuffled for sentence in split_sentences(report))
        reordered += shuffled != " ".join(split_sentences(report))
    assert reordered > 0.5 * len(real_reports)  # most reports have several sentences
    first = [shuffle_sentences(r, torch.Generator().manual_seed(5)) for r in real_reports[:50]]
    again = [shuffle_sentences(r, torch.Generator().manual_seed(5)) for r in real_reports[:50]]
    assert first == again


def test_gloria_cleaning():
    impression = "\n1. Mild consolidation at the right lung base.\n2. No pneumothorax.\n3. Effusion.\n"
    assert clean_report_gloria(impression) == "mild consolidation at the right lung base no pneumothorax"
    assert clean_report_gloria("Small  left pleural effusion") == "small left pleural effusion"
    assert clean_report_gloria("Caf\u00e9 sign noted. x.") == "caf sign noted"  # ASCII only; 1-token sentences dropped
    assert clean_report_gloria("") == ""
    with pytest.raises(TypeError, match="float"):
        clean_report_gloria(float("nan"))


def test_mlm_official_strategy(tokenizer):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    ids = tokenizer(["pleural effusion with mild cardiomegaly"] * 400, padding="max_length", max_length=24,
                    return_special_tokens_mask=True, return_tensors="pt")
    corrupted, labels = processor.corrupt_for_mlm(ids["input_ids"], ids["special_tokens_mask"],
                                                  torch.Generator().manual_seed(0))
    chosen = labels != -100
    special = ids["special_tokens_mask"].bool()
    assert not (chosen & special).any()  # [CLS], [SEP], [PAD] never chosen
    assert torch.equal(labels[chosen], ids["input_ids"][chosen])
    assert (corrupted[chosen] == MASK).all()  # every chosen token becomes [MASK]
    assert torch.equal(corrupted[~chosen], ids["input_ids"][~chosen])
    rate = chosen.sum().item() / (~special).sum().item()
    assert 0.47 < rate < 0.53


def test_mlm_bert_strategy(tokenizer):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer, mlm_strategy="bert", mlm_probability=0.15)
    ids = tokenizer(["pleural effusion with mild cardiomegaly"] * 2000, padding="max_length", max_length=16,
                    return_special_tokens_mask=True, return_tensors="pt")
    corrupted, labels = processor.corrupt_for_mlm(ids["input_ids"], ids["special_tokens_mask"],
                                                  torch.Generator().manual_seed(0))
    chosen = labels != -100
    masked = (corrupted == MASK) & chosen
    kept = (corrupted == ids["input_ids"]) & chosen
    assert 0.13 < chosen.sum() / (~ids["special_tokens_mask"].bool()).sum() < 0.17
    assert 0.77 < masked.sum() / chosen.sum() < 0.83
    assert 0.07 < kept.sum() / chosen.sum() < 0.13  # (random replacements can also hit the same id, rarely)
    with pytest.raises(ValueError, match="mlm_strategy"):
        AltaProcessor(AltaImageProcessor(), tokenizer, mlm_strategy="whole_word")


def test_training_sample_keys_text_and_reproducibility(tokenizer, realdata_dir, real_reports):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    long_report = max(real_reports, key=len)
    samples = [processor.preprocess_study(realdata_dir / NIH_PNG, report=long_report,
                                          generator=torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    first = samples[0]
    assert set(first) == set(PRETRAINING_KEYS)
    assert first["input_ids"].shape == (128,) and first["input_ids"][0] == CLS
    assert first["attention_mask"].sum() == 128 and first["input_ids"][-1] == SEP  # truncated, still closed by [SEP]
    assert all(torch.equal(first[key], samples[1][key]) for key in first)
    assert not torch.equal(first["input_ids"], samples[2]["input_ids"])  # another sentence order
    tokens_in_order = processor.tokenizer(long_report)["input_ids"]
    assert set(first["input_ids"].tolist()) <= set(tokens_in_order) | {PAD}


def test_training_sample_rejects_an_empty_report(tokenizer, realdata_dir):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    with pytest.raises(ValueError, match="report"):
        processor.preprocess_study(realdata_dir / NIH_PNG, report="  ")


def test_collator_batch_of_one_and_errors(tokenizer, realdata_dir):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    sample = processor.preprocess_study(realdata_dir / NIH_PNG, report="No pneumothorax. Lungs are clear.",
                                        generator=torch.Generator().manual_seed(0))
    batch = AltaPreTrainingCollator()([sample])
    assert {key: tuple(value.shape) for key, value in batch.items()} == {
        "pixel_values": (1, 4, 3, 224, 224), "view_mask": (1, 4), "target_pixel_values": (1, 3, 448, 448),
        "input_ids": (1, 128), "attention_mask": (1, 128), "mlm_input_ids": (1, 128), "mlm_labels": (1, 128)}
    with pytest.raises(ValueError, match="lacks"):
        AltaPreTrainingCollator()([{key: value for key, value in sample.items() if key != "mlm_labels"}])
    with pytest.raises(ValueError, match="empty"):
        AltaPreTrainingCollator()([])


def test_inference_call(tokenizer, realdata_dir):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    inputs = processor(images=[str(realdata_dir / NIH_PNG)] * 2, text=["pleural effusion", "no acute process here"])
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values"}
    assert tuple(inputs["input_ids"].shape) == (2, 128)
    longest = processor(text=["pleural effusion", "no acute process here"], padding="longest")
    assert longest["input_ids"].shape[1] == int(longest["attention_mask"].sum(1).max())
    short = processor(text="There is pneumonia", max_length=10)
    assert tuple(short["input_ids"].shape) == (1, 10)
    with pytest.raises(ValueError, match="needs"):
        processor()
    assert re.fullmatch(r"\[CLS\].*\[SEP\]", processor.tokenizer.decode(longest["input_ids"][0][:4]))
