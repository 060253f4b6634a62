"""Report text: sentence shuffling for training and the GLoRIA-style cleaning of the CheXpert evaluations."""

import re

import torch

__all__ = ["clean_report_gloria", "separate_control_characters", "shuffle_sentences", "split_sentences"]

# A sentence ends at whitespace that follows "." or "?", unless the period closes an abbreviation such as "e.g."
# (letter, period, letter, any character) or a title such as "Dr." (capital + lower-case letter): the rule the
# official training data pipeline uses.
_SENTENCE_END = re.compile(r"(?<=[.?])(?<!\w\.\w.)(?<![A-Z][a-z]\.)\s")
_NUMBERED_ITEM = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")
# Characters BERT's tokenizer deletes (NUL, other C0/C1 controls, U+FFFD from a bad decode, zero-width space): deleted,
# they glue the words on either side into one `##` word-piece chain, so they become spaces first. Tab, newline and
# carriage return are whitespace already; format characters such as the soft hyphen are rightly deleted inside a word.
_WORD_GLUING = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufffd]")


def separate_control_characters(text: str) -> str:
    """`text` with the characters BERT would delete between words replaced by spaces."""
    return _WORD_GLUING.sub(" ", text)


def split_sentences(text: str) -> list[str]:
    return [sentence for sentence in _SENTENCE_END.split(text.strip()) if sentence]


def shuffle_sentences(text: str, generator: torch.Generator | None = None) -> str:
    """The report's sentences in a random order (drawn from `generator`), joined by single spaces."""
    sentences = split_sentences(text)
    order = torch.randperm(len(sentences), generator=generator).tolist() if len(sentences) > 1 else range(len(sentences))
    return " ".join(sentences[index] for index in order)


def clean_report_gloria(text: str) -> str:
    """
    GLoRIA-style cleaning (CheXpert 5x200 impressions and prompts): newlines become spaces; the text is cut into
    sentences at numbered-list markers ("1.") and at every period; each sentence is lower-cased and reduced to its
    `\\w+` tokens with non-ASCII characters dropped; sentences with at most one token are discarded; the rest are
    joined with spaces.
    """
    if not isinstance(text, str):
        raise TypeError(f"clean_report_gloria expects a string, got {type(text).__name__}: {text!r}")
    text = text.replace("\n", " ")
    sentences = [piece for item in _NUMBERED_ITEM.split(text) for piece in item.split(".")]
    kept = []
    for sentence in sentences:
        tokens = _WORD.findall(sentence.replace("\ufffd\ufffd", " ").lower())
        if len(tokens) <= 1:
            continue
        ascii_tokens = [token.encode("ascii", "ignore").decode("ascii") for token in tokens]
        kept.append(" ".join(token for token in ascii_tokens if token))
    return " ".join(kept)
