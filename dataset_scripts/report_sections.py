"""Sectioning of MIMIC-CXR free-text reports, following the rules MIMIC-CXR documents for its own parser.

The rules (restated from the MIMIC-CXR `txt/section_parser.py` behaviour, see `docs/datasets.md`):

* A header is an upper-case name (letters, spaces and `()/,-`) at the start of a line that begins
  with one space, followed by a colon and one whitespace character. The pattern needs the newline in
  front, so a header on the very first line of the file is not recognised.
* Text before the first header is the `preamble`; a report without any header is one section
  called `full report`. A section's text runs from the end of its header to the start of the next
  header; the search for the next header starts at the first newline after the current header.
* Names are lower-cased and normalised: known synonyms and typos map to a canonical name; otherwise a
  name containing impression, findings, history, comparison or addendum becomes that word, and a name
  containing a view phrase ("chest", "portable", "pa and lateral", "two views", ...) becomes findings.
* Empty impression and findings sections are dropped. If neither remains, the part of the last
  section after its first blank line (`"\\n \\n"`) becomes a `last_paragraph` section.

The per-report hand corrections MIMIC-CXR applies to 54 specific reports are not reproduced.
"""

from __future__ import annotations

import re
from functools import lru_cache

SECTION_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
BLANK_LINE = "\n \n"

# canonical name -> spellings seen in MIMIC-CXR headers (lower case)
_SYNONYMS = {
    "comparison": ("comparisons", "reference exam", "comparison exam", "comparison film",
                   "comparision", "comparsion", "comparrison", "comparisions"),
    "history": ("clinical history", "clinical information", "patient history", "pfi"),
    "indication": ("reason for examination", "reason for exam", "clinical indication", "idication", "ndication"),
    "examination": ("exam", "type of examination"),
    "impression": ("conclusion", "findings and impression", "findings/impression", "findings/ impression",
                   "impresson", "imprression", "imoression", "impressoin", "imprssion", "impresion",
                   "imperssion", "mpression", "impession"),
    "findings": ("finding", "findins", "findindgs", "findgings", "findngs", "findnings", "finidngs",
                 "reference findings", "chest, two views"),
    "recommendations": ("recommendation(s)", "recommendation"),
    "wet read": ("wetread",),
}
_CANONICAL = {spelling: name for name, spellings in _SYNONYMS.items() for spelling in spellings}
_CONTAINED_NAMES = ("impression", "findings", "history", "comparison", "addendum")
_VIEW_PHRASES = re.compile(
    "chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views"
    "|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright"
    "|ribs|pa and lat"
)

REPORT_SECTION_MODES = ("findings_impression", "full")
_FALLBACK_SECTIONS = ("last_paragraph", "comparison")


@lru_cache(maxsize=4096)  # a few dozen distinct header names cover almost every report
def normalize_section_name(name: str) -> str:
    name = name.lower().strip()
    if name in _CANONICAL:
        return _CANONICAL[name]
    for canonical in _CONTAINED_NAMES:
        if canonical in name:
            return canonical
    if _VIEW_PHRASES.search(name):
        return "findings"
    return name


def split_sections(report: str) -> list[tuple[str, str]]:
    """`[(normalised name, raw text), ...]` in report order; see the module docstring for the rules."""
    report = report.replace("\r\n", "\n")
    # One scan finds the same headers as "search again from the first newline after each header":
    # a header starts with a newline, and none lies between a header's end and the next newline.
    headers = list(SECTION_HEADER.finditer(report))
    if not headers:
        sections = [("full report", report)]
    else:
        ends = [header.start() for header in headers[1:]] + [len(report)]
        sections = [("preamble", report[: headers[0].start(1)])]
        sections += [(normalize_section_name(h.group(1)), report[h.end(): end]) for h, end in zip(headers, ends)]
    sections = [(name, text) for name, text in sections if name not in ("impression", "findings") or text.strip()]
    names = {name for name, _ in sections}
    if "impression" not in names and "findings" not in names and BLANK_LINE in sections[-1][1]:
        name, text = sections[-1]
        head, tail = text.split(BLANK_LINE, 1)
        sections[-1] = (name, head)
        sections.append(("last_paragraph", tail))
    return sections


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space and strip the ends."""
    return " ".join(text.split())


_WORD_CHARACTER = re.compile(r"[^\W_]")  # a letter or digit: "___" (PHI) alone is not usable text


def _last_section(sections: list[tuple[str, str]], name: str) -> str:
    """The last section called `name`, whitespace normalised; "" if absent or without a letter or digit."""
    for section_name, text in reversed(sections):
        if section_name == name:
            text = normalize_whitespace(text)
            return text if _WORD_CHARACTER.search(text) else ""
    return ""


def report_text(report: str, mode: str = "findings_impression") -> tuple[str, str]:
    """The training text of a report and where it came from.

    `mode="full"`: the whole report on one line (source `"full"`). `mode="findings_impression"`:
    the last FINDINGS section, then the last IMPRESSION section, separated by a space (and a full stop
    when the findings do not end with `.`, `?` or `!`), either alone if the other is missing; without both, the last paragraph, then the comparison section (MIMIC-CXR's own order).
    Whitespace is normalised and PHI markers (`___`) are kept; a section is usable when it has a letter
    or digit. Returns `("", "none")` when nothing usable is left.
    """
    if mode == "full":
        text = normalize_whitespace(report)
        return (text, "full") if _WORD_CHARACTER.search(text) else ("", "none")
    if mode != "findings_impression":
        raise ValueError(f"report section mode must be one of {REPORT_SECTION_MODES}, got {mode!r}")
    sections = split_sections(report)
    findings, impression = _last_section(sections, "findings"), _last_section(sections, "impression")
    if findings and impression:
        # a findings section without final punctuation would run into the impression as one sentence
        # for the processor's sentence shuffling; close it first
        separator = " " if findings[-1] in ".?!" else ". "
        return f"{findings}{separator}{impression}", "findings+impression"
    if findings or impression:
        return (findings, "findings") if findings else (impression, "impression")
    for name in _FALLBACK_SECTIONS:
        text = _last_section(sections, name)
        if text:
            return text, name
    return "", "none"


def impression_text(report: str) -> str:
    """The last IMPRESSION section, whitespace normalised ("" if the report has none)."""
    return _last_section(split_sections(report), "impression")


def decode_report(data: bytes) -> tuple[str, bool]:
    """Decode report bytes: UTF-8 if valid, else Windows-1252, else Latin-1 (never fails). Returns (text, fell_back)."""
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), True
    except UnicodeDecodeError:
        return data.decode("latin-1"), True


__all__ = [
    "REPORT_SECTION_MODES",
    "decode_report",
    "impression_text",
    "normalize_section_name",
    "normalize_whitespace",
    "report_text",
    "split_sections",
]
