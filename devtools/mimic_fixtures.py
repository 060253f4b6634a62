"""Synthetic MIMIC-CXR-JPG + MIMIC-CXR report fixtures in the real file formats (docs/datasets.md, "MIMIC-CXR-JPG pre-training set").

Two generators:
* `write_mimic_fixture`: a small hand-made set with every quirk the builders must handle; the tests
  state the exact rows it must produce;
* `write_synthetic_mimic`: a seeded random set of any size (the benchmark uses the full size:
  377,110 images, 227,835 studies, 65,379 subjects).
"""

from __future__ import annotations

import gzip
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

METADATA_HEADER = (
    "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,StudyDate,StudyTime,"
    "ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,PatientOrientationCodeSequence_CodeMeaning"
)
SPLIT_HEADER = "dicom_id,study_id,subject_id,split"
CHEXPERT_LABELS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)
TITLE = " " * 33 + "FINAL REPORT\n"
UNDERSCORE_LINE = " " + "_" * 78 + "\n"


def report_block(header: str | None, body: str, inline: bool = False) -> str:
    """One block of a MIMIC report: every line starts with a space, lines stay within 79 characters.

    `inline`: `HEADER:  text` on one line (EXAMINATION, INDICATION, ...); otherwise `HEADER: ` then a
    blank line (a single space) and the wrapped text (FINDINGS, IMPRESSION). `header=None`: plain text.
    """
    lines = textwrap.wrap(body, width=78, break_on_hyphens=False) if body else []
    if header is None:
        return "".join(f" {line}\n" for line in lines)
    if inline:
        first, *rest = textwrap.wrap(f"{header}:  {body}", width=78, break_on_hyphens=False)
        return "".join(f" {line}\n" for line in [first, *rest])
    return f" {header}: \n \n" + "".join(f" {line}\n" for line in lines)


def mimic_report(*blocks: str, addendum: str | None = None) -> str:
    """Blocks joined by blank lines (`" \\n"`) under the 33-space title; an addendum sits on top, cut off by underscores."""
    body = TITLE + " \n".join(blocks)
    if addendum is None:
        return body
    return TITLE + report_block("ADDENDUM", addendum, inline=True) + " \n" + UNDERSCORE_LINE + body


def _dicom(head: str, n: int) -> str:
    return f"{head}-{n:08x}-0c1d2e3f-4a5b6c7d-8e9fa0b1"


# subject, study, dicom_id, ViewPosition, ViewCode, StudyDate, StudyTime (as written in the real CSV)
FIXTURE_IMAGES = [
    # subject 10000032 (train): the real study ids/dicom ids of p10000032
    (10000032, 50414267, "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA", "postero-anterior", "21800506", "213014.531"),
    (10000032, 50414267, "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL", "lateral", "21800506", "213014.531"),
    (10000032, 53189527, "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "PA", "postero-anterior", "21800626", "165500.312"),
    (10000032, 53189527, "e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c", "LATERAL", "lateral", "21800626", "165500.312"),
    # 08:05:56.875 -- written without its leading zero
    (10000032, 53911762, "fffabebf-74fd3a1f-673b6b41-96ec0ac9-2ab69818", "AP", "antero-posterior", "21800723", "80556.875"),
    (10000032, 53911762, "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", "AP", "antero-posterior", "21800723", "80556.875"),
    # same day, 10:20 -- later, although "102000.0" < "80556.875" as strings
    (10000032, 56699142, "ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c", "AP", "antero-posterior", "21800723", "102000.0"),
    # subject 10000764 (validate)
    (10000764, 57375967, _dicom("5e000001", 1), "", "antero-posterior", "21321015", "45.328"),
    (10000764, 57375967, _dicom("0b000002", 2), "LL", "", "21321015", "45.328"),
    (10000764, 57375967, _dicom("9c000003", 3), "LATERAL", "lateral", "21321015", "45.328"),
    (10000764, 51234567, _dicom("3a000004", 4), "LATERAL", "lateral", "21321101", "120000.0"),  # no frontal
    (10000764, 52222222, _dicom("4b000005", 5), "PA", "postero-anterior", "21321102", "93000.0"),
    (10000764, 52222222, _dicom("4b000006", 6), "LL", "", "21321102", "93000.0"),
    (10000764, 53333333, _dicom("1c000007", 7), "PA LLD", "postero-anterior", "21321102", "93000.0"),  # equal time
    # subject 10001217 (test)
    (10001217, 50000001, _dicom("7d000008", 8), "XTABLE LATERAL", "", "21851119", "101010.0"),  # only "other"
    (10001217, 58913004, _dicom("8e000009", 9), "PA", "postero-anterior", "21851120", "141000.0"),  # no report
    (10001217, 52067803, _dicom("9f00000a", 10), "AP", "antero-posterior", "21851121", "70000.0"),  # no report text
    (10001217, 55555555, _dicom("af00000b", 11), "AP", "antero-posterior", "21851122", "101500.25"),
    (10001217, 55555555, _dicom("bf00000c", 12), "LL", "", "21851122", "101500.25"),
]
SPLIT_OF_SUBJECT = {10000032: "train", 10000764: "validate", 10001217: "test"}

# rows the builders must count and drop
IMAGE_WITHOUT_SPLIT = (10000032, 53189527, "00000000-00000000-00000000-00000000-00000001", "PA", "postero-anterior", "21800626", "165500.312")
MALFORMED_METADATA_LINES = [
    # subject_id not a number
    "11111111-22222222-33333333-44444444-55555555,p10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect",
    # StudyTime missing
    "21111111-22222222-33333333-44444444-55555555,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,,CHEST (PA AND LAT),postero-anterior,Erect",
    # one field too many: pandas skips the line
    "31111111-22222222-33333333-44444444-55555555,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544,21800506,213014.531,CHEST (PA AND LAT),postero-anterior,Erect,extra",
]

FIXTURE_REPORTS = {
    50414267: mimic_report(
        report_block("EXAMINATION", "CHEST (PA AND LAT)", inline=True),
        report_block("INDICATION", "___ year old woman with ?pleural effusion  // ?pleural effusion", inline=True),
        report_block("TECHNIQUE", "Chest PA and lateral", inline=True),
        report_block("COMPARISON", "___", inline=True),
        report_block("FINDINGS", "Cardiac size cannot be evaluated.  Large left pleural effusion is new.  Small right "
                     "effusion is new.  The upper lungs are clear.  Right lower lobe opacities are better seen in prior "
                     "CT.  There is no pneumothorax.  There are mild degenerative changes in the thoracic spine"),
        report_block("IMPRESSION", "Large left pleural effusion"),
    ),
    # impression only
    53189527: mimic_report(
        report_block("EXAMINATION", "CHEST (PA AND LAT)", inline=True),
        report_block("INDICATION", "History: ___F with shortness of breath", inline=True),
        report_block("COMPARISON", "Chest radiograph from ___.", inline=True),
        report_block("IMPRESSION", "No acute cardiopulmonary process.  Left effusion has resolved."),
    ),
    # findings only, with a Windows-1252 byte (0xB0, degree sign) -- replaced below
    53911762: mimic_report(
        report_block("INDICATION", "___M with fever, rotated DEG on positioning.", inline=True),
        report_block("FINDINGS", "Portable AP upright view of the chest.  Patient is rotated 15DEG to the left.  Lungs "
                     "are clear.  No pleural effusion or pneumothorax."),
    ),
    # addendum on top
    56699142: mimic_report(
        report_block("EXAMINATION", "CHEST (PORTABLE AP)", inline=True),
        report_block("FINDINGS", "Endotracheal tube terminates 4 cm above the carina."),
        report_block("IMPRESSION", "1. ET tube in standard position.\n2. No pneumothorax."),
        addendum="Findings were discussed with Dr. ___ by telephone at 10:45 on ___.",
    ),
    # neither findings nor impression: the last paragraph
    57375967: mimic_report(
        report_block("EXAMINATION", "CHEST (PORTABLE AP)", inline=True),
        report_block("INDICATION", "___ with chest pain", inline=True),
        report_block(None, "Heart size is normal.  Lungs are clear.  No pneumothorax."),
    ),
    51234567: mimic_report(report_block("IMPRESSION", "Lateral view only, no acute process.")),
    # no header at all ("full report") with one blank line
    52222222: TITLE + " PA AND LATERAL CHEST RADIOGRAPH.\n \n The lungs are clear.  There is no effusion.\n",
    # a view phrase as header (-> findings) and CONCLUSION (-> impression)
    53333333: mimic_report(
        report_block("PA AND LATERAL VIEWS OF THE CHEST", "The heart is normal in size.  Left basilar opacity.", inline=True),
        report_block("CONCLUSION", "Left basilar atelectasis."),
    ),
    50000001: mimic_report(report_block("IMPRESSION", "Cross-table lateral view.")),
    # 58913004: no report file
    # headers only, no usable text
    52067803: mimic_report(
        report_block("EXAMINATION", "CHEST (PORTABLE AP)", inline=True),
        report_block("INDICATION", "___", inline=True),
    ),
    # empty FINDINGS section (dropped): impression only; CRLF line ends as after a Windows extraction
    55555555: mimic_report(
        report_block("EXAMINATION", "CHEST (PORTABLE AP)", inline=True),
        " FINDINGS: \n",
        report_block("IMPRESSION", "Interval increase in right pleural effusion."),
    ).replace("\n", "\r\n"),
}


# mimic-cxr-2.0.0-chexpert.csv rows (study -> labels; every other cell empty); 52222222 has no row
FIXTURE_CHEXPERT = {
    50414267: {"Pleural Effusion": "1.0", "Edema": "0.0"},
    53189527: {"Cardiomegaly": "1.0", "Support Devices": "1.0"},
    53911762: {"Atelectasis": "1.0"},  # no IMPRESSION section
    56699142: {"Edema": "1.0", "Pleural Effusion": "0.0", "Lung Opacity": "-1.0"},
    57375967: {"Consolidation": "1.0", "Edema": "1.0"},  # two positives
    51234567: {"Edema": "1.0"},  # no frontal image
    53333333: {"Atelectasis": "1.0", "No Finding": ""},
    50000001: {"Pneumothorax": "1.0"},
    58913004: {"Cardiomegaly": "1.0", "Edema": "-1.0"},  # uncertain, and no report
    52067803: {"No Finding": "1.0"},
    55555555: {"Consolidation": "1.0", "Pleural Effusion": "0.0"},
}


def _report_bytes(study_id: int) -> bytes:
    data = FIXTURE_REPORTS[study_id].encode("ascii")
    return data.replace(b"DEG", b"\xb0")


@dataclass
class MimicFixture:
    root: Path
    reports: Path


def _write_text(path: Path, text: str, compress: bool) -> None:
    if compress:
        with gzip.open(str(path) + ".gz", "wt", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")


def write_mimic_fixture(folder: Path, compress: bool = False, reports: str = "zip", version: str = "2.0.0") -> MimicFixture:
    """The hand-made MIMIC fixture under `folder`: `.csv` or `.csv.gz` tables, reports as zip or tree.

    `version="2.1.0"` also writes the files that release added (the tables keep their 2.0.0 names).
    """
    root = folder / "mimic-cxr-jpg"
    root.mkdir(parents=True)
    metadata_lines, split_lines = [METADATA_HEADER], [SPLIT_HEADER]
    for subject, study, dicom, position, code, date, time in FIXTURE_IMAGES + [IMAGE_WITHOUT_SPLIT]:
        procedure = "CHEST (PORTABLE AP)" if position == "AP" else "CHEST (PA AND LAT)"
        orientation = "" if position == "AP" else "Erect"
        metadata_lines.append(f"{dicom},{subject},{study},{procedure},{position},3056,2544,{date},{time},{procedure},{code},{orientation}")
    metadata_lines[3:3] = MALFORMED_METADATA_LINES
    for subject, study, dicom, *_ in FIXTURE_IMAGES:
        split_lines.append(f"{dicom},{study},{subject},{SPLIT_OF_SUBJECT[subject]}")
    _write_text(root / "mimic-cxr-2.0.0-metadata.csv", "\n".join(metadata_lines) + "\n", compress)
    _write_text(root / "mimic-cxr-2.0.0-split.csv", "\n".join(split_lines) + "\n", compress)
    study_subject = {study: subject for subject, study, *_ in FIXTURE_IMAGES}
    chexpert_lines = ["subject_id,study_id," + ",".join(CHEXPERT_LABELS)]
    for study, labels in FIXTURE_CHEXPERT.items():
        chexpert_lines.append(f"{study_subject[study]},{study}," + ",".join(labels.get(c, "") for c in CHEXPERT_LABELS))
    _write_text(root / "mimic-cxr-2.0.0-chexpert.csv", "\n".join(chexpert_lines) + "\n", compress)
    if version == "2.1.0":
        (root / "mimic-cxr-2.1.0-test-set-labeled.csv").write_text("study_id," + ",".join(CHEXPERT_LABELS) + "\n")
        (root / "IMAGE_FILENAMES").write_text("files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg\n")

    members = {f"files/p{str(study_subject[s])[:2]}/p{study_subject[s]}/s{s}.txt": _report_bytes(s) for s in FIXTURE_REPORTS}
    if reports == "zip":
        reports_path = folder / "mimic-cxr-reports.zip"
        with zipfile.ZipFile(reports_path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    else:
        reports_path = folder / "mimic-cxr-reports"
        for name, data in members.items():
            (reports_path / name).parent.mkdir(parents=True, exist_ok=True)
            (reports_path / name).write_bytes(data)
    return MimicFixture(root=root, reports=reports_path)


def write_fixture_jpgs(root: Path, skip: tuple[str, ...] = ()) -> None:
    """Empty stand-in files for every fixture image (the builders only check that they exist)."""
    for subject, study, dicom, *_ in FIXTURE_IMAGES:
        if dicom in skip:
            continue
        path = root / f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


# ------------------------------------------------------------------------------------------------
# seeded random MIMIC of any size

_SENTENCES = {
    "indication": [
        "___ year old man with cough and fever  // eval for pneumonia",
        "___F with shortness of breath, history of CHF  // ?pulmonary edema",
        "History: ___M s/p intubation  // ET tube placement",
        "___ year old woman with chest pain  // r/o acute process",
    ],
    "findings": [
        "The lungs are clear without focal consolidation.", "There is no focal consolidation.",
        "No pleural effusion or pneumothorax is seen.", "The cardiomediastinal silhouette is within normal limits.",
        "Mild pulmonary vascular congestion is new compared to the prior study.", "Small bilateral pleural effusions.",
        "Bibasilar atelectasis is unchanged.", "Moderate cardiomegaly is stable.",
        "Endotracheal tube terminates ___ cm above the carina.", "Right PICC line ends in the mid SVC.",
        "There are mild degenerative changes in the thoracic spine.", "Hilar contours are normal.",
        "Patchy opacity in the right lower lobe could reflect atelectasis or early pneumonia.",
        "The aorta is tortuous and calcified.", "No free air below the diaphragm.",
    ],
    "impression": [
        "No acute cardiopulmonary process.", "Mild pulmonary edema.", "Small left pleural effusion.",
        "Right lower lobe pneumonia.", "Stable cardiomegaly.", "Left basilar atelectasis.",
        "Interval improvement in the right basilar opacity.", "Lines and tubes in standard position.",
    ],
}


def _synthetic_report(rng: np.random.Generator) -> str:
    """About 900 characters, like a typical MIMIC-CXR report; section mix as in data_formats §1.6."""
    blocks = [
        report_block("EXAMINATION", "CHEST (PA AND LAT)", inline=True),
        report_block("INDICATION", str(rng.choice(_SENTENCES["indication"])), inline=True),
        report_block("TECHNIQUE", "Chest PA and lateral", inline=True),
        report_block("COMPARISON", "___", inline=True),
    ]
    kind = rng.random()
    findings = " ".join(rng.choice(_SENTENCES["findings"], size=rng.integers(6, 15)))
    impression = " ".join(rng.choice(_SENTENCES["impression"], size=rng.integers(1, 4)))
    if kind < 0.66:  # about two thirds have findings, 83% an impression, 5% neither
        blocks.append(report_block("FINDINGS", findings))
    if kind < 0.50 or 0.66 <= kind < 0.95:
        blocks.append(report_block("IMPRESSION", impression))
    if kind >= 0.95:
        blocks.append(report_block(None, findings))
    if rng.random() < 0.1:
        blocks.append(report_block("NOTIFICATION", "The findings were discussed with Dr. ___ by ___ on the telephone "
                                   "on ___ at 10:15 AM, 5 minutes after discovery of the findings.", inline=True))
    return mimic_report(*blocks)


def write_synthetic_mimic(
    folder: Path,
    n_subjects: int = 65_379,
    n_studies: int = 227_835,
    n_images: int = 377_110,
    seed: int = 0,
    compress: bool = True,
    split_fractions: tuple[float, float, float] = (0.9879, 0.0076, 0.0045),
    with_reports: bool = True,
) -> MimicFixture:
    """Random MIMIC-CXR-JPG tables (+ chexpert labels) and a reports zip with the real layouts and sizes."""
    if not n_subjects <= n_studies <= n_images:
        raise ValueError("need n_subjects <= n_studies <= n_images")
    rng = np.random.default_rng(seed)
    root = folder / "mimic-cxr-jpg"
    root.mkdir(parents=True)

    subjects = 10_000_000 + rng.choice(10_000_000, size=n_subjects, replace=False)
    studies_per_subject = 1 + rng.multinomial(n_studies - n_subjects, np.full(n_subjects, 1 / n_subjects))
    study_subject = np.repeat(subjects, studies_per_subject)
    study_ids = 50_000_000 + rng.choice(10_000_000, size=n_studies, replace=False)
    # dates increase within a subject (a few equal), times are HHMMSS.fff numbers
    steps = np.cumsum(rng.integers(0, 60, size=n_studies))
    first_study = np.repeat(np.cumsum(studies_per_subject) - studies_per_subject, studies_per_subject)
    day = steps - steps[first_study] + np.repeat(rng.integers(0, 20_000, size=n_subjects), studies_per_subject)
    dates = np.char.replace((np.datetime64("2100-01-01") + day).astype(str), "-", "")
    seconds = rng.integers(0, 86_400, size=n_studies)
    times = (seconds // 3600) * 10_000 + (seconds // 60 % 60) * 100 + seconds % 60 + rng.integers(0, 1000, n_studies) / 1000
    subject_split = rng.choice(["train", "validate", "test"], size=n_subjects, p=np.array(split_fractions) / sum(split_fractions))
    study_split = np.repeat(subject_split, studies_per_subject)

    images_per_study = 1 + rng.multinomial(n_images - n_studies, np.full(n_studies, 1 / n_studies))
    image_study = np.repeat(np.arange(n_studies), images_per_study)
    first_image = np.r_[True, image_study[1:] != image_study[:-1]]
    views = np.where(
        first_image,
        rng.choice(["AP", "PA", "LATERAL", ""], size=n_images, p=[0.55, 0.38, 0.05, 0.02]),
        rng.choice(["LATERAL", "LL", "AP", "PA", "", "AP AXIAL"], size=n_images, p=[0.55, 0.25, 0.1, 0.05, 0.04, 0.01]),
    )
    codes = pd.Series(views).map({"AP": "antero-posterior", "PA": "postero-anterior", "LATERAL": "lateral", "LL": ""})
    codes = codes.where(codes.notna(), pd.Series(rng.choice(["antero-posterior", "lateral", ""], size=n_images)))
    hexes = rng.integers(0, 2**32, size=(n_images, 5), dtype=np.uint64)
    dicom_ids = pd.Series([f"{a:08x}-{b:08x}-{c:08x}-{d:08x}-{e:08x}" for a, b, c, d, e in hexes.tolist()])
    metadata = pd.DataFrame({
        "dicom_id": dicom_ids,
        "subject_id": study_subject[image_study],
        "study_id": study_ids[image_study],
        "PerformedProcedureStepDescription": "CHEST (PA AND LAT)",
        "ViewPosition": views,
        "Rows": 3056,
        "Columns": 2544,
        "StudyDate": dates[image_study],
        "StudyTime": times[image_study],
        "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
        "ViewCodeSequence_CodeMeaning": codes,
        "PatientOrientationCodeSequence_CodeMeaning": "Erect",
    })
    suffix = ".csv.gz" if compress else ".csv"
    metadata.to_csv(root / f"mimic-cxr-2.0.0-metadata{suffix}", index=False)
    metadata[["dicom_id", "study_id", "subject_id"]].assign(split=study_split[image_study]).to_csv(
        root / f"mimic-cxr-2.0.0-split{suffix}", index=False
    )
    labels = rng.choice(np.array([1.0, 0.0, -1.0, np.nan]), size=(n_studies, len(CHEXPERT_LABELS)), p=[0.12, 0.1, 0.03, 0.75])
    chexpert = pd.DataFrame(labels, columns=list(CHEXPERT_LABELS))
    chexpert.insert(0, "study_id", study_ids)
    chexpert.insert(0, "subject_id", study_subject)
    chexpert.to_csv(root / f"mimic-cxr-2.0.0-chexpert{suffix}", index=False)

    reports_path = folder / "mimic-cxr-reports.zip"
    if with_reports:
        # a pool of distinct reports keeps generation fast; the builder still parses every file
        pool = [_synthetic_report(rng).encode() for _ in range(min(n_studies, 2_000))]
        choice = rng.integers(0, len(pool), size=n_studies)
        with zipfile.ZipFile(reports_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            for subject, study, k in zip(study_subject.tolist(), study_ids.tolist(), choice.tolist()):
                archive.writestr(f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt", pool[k])
    return MimicFixture(root=root, reports=reports_path)
