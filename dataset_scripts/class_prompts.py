"""Zero-shot class prompts for the five CheXpert competition classes (GLoRIA's phrase table, Apache-2.0).

The table (`chexpert_class_prompts.json`, licence text in `GLORIA_LICENSE.txt`, both beside this file) gives, per
class, three phrase lists in a fixed key order (severity, subtype, location; for Pleural Effusion
severity, location, subtype). Every combination `f"{a} {b} {c}".strip()` is a prompt, duplicates
included (the Pleural Effusion subtype "bilateral pleural effusion" is listed twice, so 54 prompts,
36 distinct): ALTA uses all of them (its sampling size exceeds every pool), and duplicates weight the
class mean embedding.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

PROMPT_TABLE_PATH = Path(__file__).with_name("chexpert_class_prompts.json")
CHEXPERT_COMPETITION_CLASSES = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def chexpert_class_prompts() -> dict[str, list[str]]:
    """`{class: [prompt, ...]}` in the order of `CHEXPERT_COMPETITION_CLASSES` (210, 15, 192, 18, 54 prompts)."""
    table = json.loads(PROMPT_TABLE_PATH.read_text(encoding="utf-8"))["classes"]
    prompts = {}
    for name in CHEXPERT_COMPETITION_CLASSES:
        lists = list(table[name].values())  # JSON objects keep their key order, which fixes the word order
        prompts[name] = [" ".join(words).strip() for words in itertools.product(*lists)]
    return prompts


__all__ = ["CHEXPERT_COMPETITION_CLASSES", "PROMPT_TABLE_PATH", "chexpert_class_prompts"]
