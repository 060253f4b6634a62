"""Radiology reports and zero-shot class prompts for the demo dataset.

A report is written from what the phantom shows: the finding (class, severity grade, side, lobe),
the support devices drawn, and, when the study has a prior, how the finding changed. It follows the
MIMIC-CXR style of a FINDINGS paragraph followed by an IMPRESSION, without the section headers:
one positive statement of the finding, negations of the absent findings ("No pneumothorax."),
incidental normal statements, device and comparison sentences. Each fact has several phrasings and
the findings sentences come in random order, so a report is not a fixed function of its class.

The class prompts reuse the reports' wording (so a small text tower trained on the reports can read
them), but none of them is a whole report.
"""

from __future__ import annotations

import numpy as np

from .demo_phantom import CLASS_NAMES, Finding

__all__ = ["CLASS_PROMPTS", "LOBE_NAMES", "severity_grade", "write_report"]

GRADES = ("mild", "moderate", "severe")


def severity_grade(severity: float) -> str:
    """"mild" below 1/3, "moderate" below 2/3, else "severe"."""
    return GRADES[min(int(float(severity) * 3.0), 2)]


LOBE_NAMES = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "lower"): "left lower lobe",
}

_SIZE = {"mild": "small", "moderate": "moderate", "severe": "large"}
_ADVERB = {"mild": "mildly", "moderate": "moderately", "severe": "severely"}
_OPACITY = {"mild": "patchy", "moderate": "confluent", "severe": "dense"}

# Statements of normality, grouped by what they deny; a report picks from the groups its finding allows.
_NORMAL_HEART = (
    "Heart size is normal.",
    "The cardiac silhouette is normal in size.",
    "The heart is normal in size.",
    "Normal cardiomediastinal silhouette.",
)
_CLEAR_LUNGS = (
    "The lungs are clear.",
    "Lungs are well expanded and clear.",
    "The lungs are clear without focal consolidation.",
)
_NO_CONSOLIDATION = ("No focal consolidation.", "There is no focal consolidation.")
_NO_EFFUSION = ("No pleural effusion.", "There is no pleural effusion.")
_NO_PNEUMOTHORAX = ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen.")
_NO_EFFUSION_OR_PNEUMOTHORAX = ("No pleural effusion or pneumothorax.", "There is no pleural effusion or pneumothorax.")
_NO_ANYTHING = ("There is no focal consolidation, pleural effusion, or pneumothorax.",)
_INCIDENTAL = (
    "The mediastinal and hilar contours are normal.",
    "Hilar contours are unremarkable.",
    "No acute osseous abnormality.",
    "Mild degenerative changes of the thoracic spine.",
    "The osseous structures are intact.",
)
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "Normal chest radiograph.",
)
_DEVICE_SENTENCES = {
    "ecg_leads": ("Monitoring leads overlie the chest.", "ECG leads project over the chest."),
    "central_line": (
        "Right internal jugular central venous catheter terminates in the SVC.",
        "A right internal jugular line ends in the lower SVC.",
    ),
    "endotracheal_tube": (
        "Endotracheal tube terminates above the carina.",
        "The endotracheal tube is in standard position.",
    ),
    "enteric_tube": (
        "Enteric tube courses below the diaphragm.",
        "A nasogastric tube extends into the stomach.",
    ),
}

CLASS_PROMPTS = {
    "No Finding": [
        "no acute cardiopulmonary process",
        "no acute intrathoracic process",
        "the lungs are clear",
        "heart size is normal and the lungs are clear",
        "normal chest radiograph",
        "no focal consolidation, pleural effusion, or pneumothorax",
        "normal cardiomediastinal silhouette with clear lungs",
    ],
    "Cardiomegaly": [
        "cardiomegaly",
        "the heart is enlarged",
        "mild cardiomegaly",
        "moderate cardiomegaly",
        "severe cardiomegaly",
        "enlargement of the cardiac silhouette",
        "the cardiac silhouette is moderately enlarged",
    ],
    "Pleural Effusion": [
        "pleural effusion",
        "small right pleural effusion",
        "moderate left pleural effusion",
        "large pleural effusion",
        "bilateral pleural effusions",
        "blunting of the costophrenic angle",
        "layering pleural effusion",
    ],
    "Pneumonia": [
        "pneumonia",
        "focal consolidation concerning for pneumonia",
        "right lower lobe pneumonia",
        "left lower lobe consolidation",
        "right upper lobe opacity",
        "patchy opacity compatible with pneumonia",
        "dense consolidation in the lung",
    ],
    "Pneumothorax": [
        "pneumothorax",
        "right pneumothorax",
        "small left apical pneumothorax",
        "large right pneumothorax",
        "moderate pneumothorax",
        "visible pleural line with absent lung markings",
        "pneumothorax with partial collapse of the lung",
    ],
}


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _capitalize(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _positive(finding: Finding, rng: np.random.Generator) -> tuple[str, str]:
    """The finding's statement in the findings section and in the impression."""
    grade = severity_grade(finding.severity)
    side = finding.side
    if finding.label == "Cardiomegaly":
        findings = _pick(rng, (
            f"The heart is {_ADVERB[grade]} enlarged.",
            f"There is {grade} cardiomegaly.",
            f"The cardiac silhouette is {_ADVERB[grade]} enlarged.",
            f"{grade} enlargement of the cardiac silhouette.",
        ))
        impression = _pick(rng, (f"{grade} cardiomegaly.", f"{grade} enlargement of the cardiac silhouette."))
        return findings, impression
    if finding.label == "Pleural Effusion":
        size = _SIZE[grade]
        if side == "bilateral":
            findings = _pick(rng, (
                f"There are {size} bilateral pleural effusions.",
                f"{size} bilateral pleural effusions are present.",
                f"{size} bilateral pleural effusions blunt both costophrenic angles.",
                f"Blunting of both costophrenic angles is compatible with {size} bilateral pleural effusions.",
            ))
            impression = _pick(rng, (f"{size} bilateral pleural effusions.", f"Bilateral pleural effusions, {size}."))
            return findings, impression
        findings = _pick(rng, (
            f"There is a {size} {side} pleural effusion.",
            f"{size} {side} pleural effusion is present.",
            f"A {size} {side} pleural effusion blunts the {side} costophrenic angle.",
            f"Blunting of the {side} costophrenic angle is compatible with a {size} pleural effusion.",
            f"{size} layering {side} pleural effusion.",
        ))
        impression = _pick(rng, (f"{size} {side} pleural effusion.", f"{side} pleural effusion, {size} in size."))
        return findings, impression
    if finding.label == "Pneumonia":
        lobe = LOBE_NAMES[(side, finding.lobe)]
        opacity = _OPACITY[grade]
        findings = _pick(rng, (
            f"There is {opacity} consolidation in the {lobe}.",
            f"{opacity} opacity in the {lobe} is concerning for pneumonia.",
            f"{opacity} airspace opacity in the {lobe}, compatible with pneumonia.",
            f"{lobe} {opacity} consolidation is present.",
        ))
        impression = _pick(rng, (
            f"{lobe} pneumonia.",
            f"{opacity} {lobe} consolidation concerning for pneumonia.",
            f"Findings compatible with {lobe} pneumonia.",
        ))
        return findings, impression
    if finding.label == "Pneumothorax":
        size = _SIZE[grade]
        apical = " apical" if grade == "mild" else ""
        findings = _pick(rng, (
            f"There is a {size} {side}{apical} pneumothorax.",
            f"A {size} {side}{apical} pneumothorax is present.",
            f"A {side} pleural line is visible with absent lung markings peripherally, "
            f"consistent with a {size} pneumothorax.",
            f"{size} {side} pneumothorax with partial collapse of the {side} lung.",
        ))
        impression = _pick(rng, (f"{size} {side}{apical} pneumothorax.", f"{side} pneumothorax, {size} in size."))
        return findings, impression
    raise ValueError(f"no positive statement for class {finding.label!r}; expected one of {CLASS_NAMES[1:]}")


def _comparison(finding: Finding, prior: Finding, rng: np.random.Generator) -> str:
    """How the finding changed since the prior study (absent there, or smaller)."""
    if finding.label == "No Finding":
        return _pick(rng, (
            "No interval change compared to the prior study.",
            "Unchanged appearance of the chest compared to the prior radiograph.",
        ))
    if finding.label == "Cardiomegaly":
        if prior.severity <= 0.0:
            return _pick(rng, ("Cardiomegaly is new compared to the prior study.",
                               "Compared to the prior radiograph, the heart is now enlarged."))
        return _pick(rng, ("The heart size has increased since the prior study.",
                           "Compared to the prior radiograph, the cardiac silhouette has enlarged."))
    if finding.label == "Pleural Effusion":
        phrase = "bilateral pleural effusions" if finding.side == "bilateral" else f"{finding.side} pleural effusion"
    elif finding.label == "Pneumonia":
        phrase = f"{LOBE_NAMES[(finding.side, finding.lobe)]} consolidation"
    else:
        phrase = f"{finding.side} pneumothorax"
    plural = finding.side == "bilateral"
    if prior.severity <= 0.0:
        verb = "are new" if plural else "is new"
        return _pick(rng, (
            f"The {phrase} {verb} compared to the prior study.",
            f"Compared to the prior radiograph, the {phrase} {verb}.",
        ))
    verb = ("have " if plural else "has ") + ("progressed" if finding.label == "Pneumonia" else "increased")
    return _pick(rng, (
        f"The {phrase} {verb} since the prior study.",
        f"Compared to the prior radiograph, the {phrase} {verb}.",
    ))


def _negations(label: str, rng: np.random.Generator) -> list[str]:
    """Statements denying the findings this study does not have, with their usual frequencies."""
    sentences = []
    if label != "Cardiomegaly" and rng.uniform() < 0.75:
        sentences.append(_pick(rng, _NORMAL_HEART))
    if label == "No Finding" or label == "Cardiomegaly":
        roll = rng.uniform()
        if roll < 0.35:
            sentences.append(_pick(rng, _NO_ANYTHING))
        else:
            if roll < 0.8:
                sentences.append(_pick(rng, _CLEAR_LUNGS))
            sentences.append(_pick(rng, _NO_EFFUSION_OR_PNEUMOTHORAX) if rng.uniform() < 0.6
                             else _pick(rng, _NO_PNEUMOTHORAX))
        return sentences
    if label != "Pneumonia" and rng.uniform() < 0.6:
        sentences.append(_pick(rng, _NO_CONSOLIDATION))
    if label != "Pleural Effusion" and rng.uniform() < 0.7:
        sentences.append(_pick(rng, _NO_EFFUSION))
    if label != "Pneumothorax" and rng.uniform() < 0.7:
        sentences.append(_pick(rng, _NO_PNEUMOTHORAX))
    return sentences


def write_report(finding: Finding, rng: np.random.Generator, devices: tuple[str, ...] = (),
                 prior: Finding | None = None) -> str:
    """The report of one study: shuffled findings sentences, then the impression, on one line."""
    if finding.label != "No Finding" and finding.severity <= 0.0:
        raise ValueError(f"finding {finding.label!r} has severity {finding.severity}; a positive study needs > 0")
    findings: list[str] = []
    if finding.label == "No Finding":
        impression = _pick(rng, _NORMAL_IMPRESSION)
    else:
        positive, impression = _positive(finding, rng)
        findings.append(positive)
    findings.extend(_negations(finding.label, rng))
    if rng.uniform() < 0.35:
        findings.append(_pick(rng, _INCIDENTAL))
    findings.extend(_pick(rng, _DEVICE_SENTENCES[name]) for name in devices)
    if prior is not None and rng.uniform() < 0.8:
        findings.append(_comparison(finding, prior, rng))
    order = rng.permutation(len(findings))
    sentences = [findings[i] for i in order]
    # about one MIMIC report in six has an impression but no findings section
    if finding.label != "No Finding" and rng.uniform() < 0.15:
        sentences = sentences[:0]
    sentences.append(impression)
    if finding.label not in ("No Finding", "Pneumothorax") and rng.uniform() < 0.3:
        sentences.append(_pick(rng, _NO_PNEUMOTHORAX))
    return " ".join(_capitalize(s) for s in sentences)
