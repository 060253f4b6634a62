"""A small BERT WordPiece vocabulary for the demo reports.

The demo corpus has a closed vocabulary of a few hundred words, so every word seen in the reports and
prompts becomes one whole-word token; characters and `##` characters cover anything else. Text is
normalised and split exactly as BERT does (the `tokenizers` BertNormalizer and BertPreTokenizer).

The vocabulary is counted here rather than with `tokenizers`' WordPiece trainer because that trainer
breaks ties in hash order: two runs on the same text give different vocabularies, and the demo data
must be bitwise reproducible for a seed.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

__all__ = ["SPECIAL_TOKENS", "build_wordpiece_vocab", "save_tokenizer"]

# the CXR-BERT order: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_wordpiece_vocab(texts: Iterable[str], *, max_size: int = 1000, min_frequency: int = 1) -> list[str]:
    """Special tokens, then every character (bare and as `##` continuation), then whole words by
    decreasing frequency (ties alphabetical) until `max_size` tokens."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    characters = sorted({char for word in counts for char in word})
    vocab = list(SPECIAL_TOKENS) + characters + [f"##{char}" for char in characters]
    if len(vocab) > max_size:
        raise ValueError(f"max_size={max_size} is smaller than the {len(vocab)} special and character tokens")
    seen = set(vocab)
    for word, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= max_size or count < min_frequency:
            break
        if word not in seen:
            vocab.append(word)
            seen.add(word)
    return vocab


def save_tokenizer(vocab: list[str], output_dir: str | os.PathLike, *, model_max_length: int = 128) -> Path:
    """Writes `vocab.txt` (one token a line, the id is the line number), a `tokenizers` `tokenizer.json`
    with the BERT pipeline, and a `tokenizer_config.json` so that `AutoTokenizer.from_pretrained(dir)`
    gives a lower-casing `BertTokenizer`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "vocab.txt").write_text("".join(f"{token}\n" for token in vocab), encoding="utf-8")
    ids = {token: index for index, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.save(str(output_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": model_max_length,
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }
    (output_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return output_dir
