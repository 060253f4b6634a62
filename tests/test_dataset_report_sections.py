"""The MIMIC-CXR report section parser and the training-text rules."""

import pytest

from alta_hf.dataset_scripts.report_sections import (
    decode_report,
    impression_text,
    normalize_section_name,
    report_text,
    split_sections,
)
from devtools.mimic_fixtures import FIXTURE_REPORTS, TITLE, mimic_report, report_block

EXAMPLE = FIXTURE_REPORTS[50414267]  # the MIMIC-CXR documentation's example report


def test_example_report_sections_match_the_documented_output():
    sections = split_sections(EXAMPLE)
    assert [name for name, _ in sections] == [
        "preamble", "examination", "indication", "technique", "comparison", "findings", "impression"
    ]
    texts = dict(sections)
    assert texts["preamble"] == TITLE + " "
    assert texts["examination"] == " CHEST (PA AND LAT)\n "
    assert texts["impression"] == "\n \n Large left pleural effusion\n"
    assert texts["findings"].startswith("\n \n Cardiac size cannot be evaluated.  Large left pleural effusion is new.")
    assert texts["findings"].endswith("degenerative changes in the thoracic spine\n ")


def test_example_report_text_in_both_modes():
    findings = ("Cardiac size cannot be evaluated. Large left pleural effusion is new. Small right effusion is new. "
                "The upper lungs are clear. Right lower lobe opacities are better seen in prior CT. There is no "
                "pneumothorax. There are mild degenerative changes in the thoracic spine")
    # the findings lack a final full stop: one is added so that they stay a sentence of their own
    assert report_text(EXAMPLE) == (findings + ". Large left pleural effusion", "findings+impression")
    text, source = report_text(EXAMPLE, "full")
    assert source == "full"
    assert text == ("FINAL REPORT EXAMINATION: CHEST (PA AND LAT) INDICATION: ___ year old woman with ?pleural effusion "
                    "// ?pleural effusion TECHNIQUE: Chest PA and lateral COMPARISON: ___ FINDINGS: " + findings
                    + " IMPRESSION: Large left pleural effusion")
    with pytest.raises(ValueError, match="findings_impression"):
        report_text(EXAMPLE, "impression_only")


def test_findings_ending_with_a_full_stop_are_joined_with_a_space():
    report = mimic_report(report_block("FINDINGS", "Lungs are clear."), report_block("IMPRESSION", "Normal chest."))
    assert report_text(report) == ("Lungs are clear. Normal chest.", "findings+impression")


@pytest.mark.parametrize("name, expected", [
    ("IMPRESSION", "impression"),
    ("CONCLUSION", "impression"),
    ("FINDINGS AND IMPRESSION", "impression"),
    ("FINDINGS/IMPRESSION", "impression"),
    ("IMPRESSON", "impression"),
    ("FINAL IMPRESSION", "impression"),  # contains "impression"
    ("FINDINGS", "findings"),
    ("FINIDNGS", "findings"),
    ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),  # view phrase
    ("PORTABLE SEMI-ERECT RADIOGRAPH", "findings"),
    ("COMPARISONS", "comparison"),
    ("PRIOR COMPARISON", "comparison"),
    ("CLINICAL HISTORY", "history"),
    ("REASON FOR EXAM", "indication"),
    ("RECOMMENDATION(S)", "recommendations"),
    ("WET READ", "wet read"),
    ("NOTIFICATION", "notification"),
    ("PROVIDER", "provider"),
])
def test_section_name_normalisation(name, expected):
    assert normalize_section_name(name) == expected


def test_header_on_the_first_line_is_not_a_header():
    report = "WET READ: ___ no pneumothorax\n IMPRESSION: \n \n No acute process.\n"
    assert [name for name, _ in split_sections(report)] == ["preamble", "impression"]
    assert split_sections(report)[0][1].startswith("WET READ: ___")


def test_next_header_search_starts_after_the_header_line():
    # a header whose colon is followed by a newline swallows it; the next line's header is then not found
    report = TITLE + " FINDINGS:\n PA AND LATERAL: Lungs are clear.\n \n IMPRESSION: \n \n Normal.\n"
    assert [name for name, _ in split_sections(report)] == ["preamble", "findings", "impression"]
    assert report_text(report) == ("PA AND LATERAL: Lungs are clear. Normal.", "findings+impression")


def test_empty_findings_are_dropped_and_last_paragraph_fallback():
    report = mimic_report(
        report_block("INDICATION", "___ with cough", inline=True),
        " FINDINGS: \n",
        report_block("NOTIFICATION", "Discussed with Dr. ___.", inline=True),
        report_block(None, "Heart size normal.  No effusion."),
        report_block(None, "Second paragraph."),
    )
    sections = split_sections(report)
    assert [name for name, _ in sections] == ["preamble", "indication", "notification", "last_paragraph"]
    assert sections[2][1] == " Discussed with Dr. ___."
    assert report_text(report) == ("Heart size normal. No effusion. Second paragraph.", "last_paragraph")


def test_report_without_headers_is_a_full_report():
    report = FIXTURE_REPORTS[52222222]
    assert [name for name, _ in split_sections(report)] == ["full report", "last_paragraph"]
    assert report_text(report) == ("The lungs are clear. There is no effusion.", "last_paragraph")
    assert split_sections(TITLE + " One line only.\n") == [("full report", TITLE + " One line only.\n")]
    assert report_text(TITLE + " One line only.\n") == ("", "none")


def test_comparison_is_the_last_resort_and_phi_alone_is_not_text():
    report = mimic_report(report_block("INDICATION", "___", inline=True), report_block("COMPARISON", "Chest radiograph ___ shows no change.", inline=True))
    assert report_text(report) == ("Chest radiograph ___ shows no change.", "comparison")
    only_phi = mimic_report(report_block("INDICATION", "cough", inline=True), report_block("COMPARISON", "___", inline=True))
    assert report_text(only_phi) == ("", "none")


def test_the_last_section_of_a_name_wins_and_impression_text():
    report = mimic_report(
        report_block("IMPRESSION", "First reading."),
        report_block("ADDENDUM", "Revised.", inline=True),
        report_block("IMPRESSION", "Second reading."),
    )
    assert report_text(report) == ("Second reading.", "impression")
    assert impression_text(report) == "Second reading."
    assert impression_text(FIXTURE_REPORTS[53911762]) == ""  # findings only


def test_crlf_line_ends_parse_like_lf():
    assert report_text(EXAMPLE.replace("\n", "\r\n")) == report_text(EXAMPLE)


def test_decode_report_falls_back_for_non_utf8_bytes():
    assert decode_report("naïve ___".encode()) == ("naïve ___", False)
    assert decode_report(b"patient\x92s 15\xb0") == ("patient\u2019s 15\u00b0", True)  # Windows-1252
    assert decode_report(b"odd \x81 byte") == ("odd \x81 byte", True)  # undefined in cp1252 -> Latin-1
