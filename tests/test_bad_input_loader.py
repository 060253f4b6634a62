"""Bad input for the loader and the processor (issue 17): oversized images, EXIF orientation, float ranges, damaged
DICOM files, empty and NUL-laden text. Every input is generated here; each case asserts the value that comes out, or a
`RadiographLoadError` / `ValueError` that names the input, or the skipped-and-counted figure of a batch job."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, JpegImagePlugin
from transformers import BertTokenizer

from alta_hf.evaluation.embedding import embed_images
from alta_hf.modeling_alta import AltaModel
from alta_hf.processing import AltaImageProcessor, AltaProcessor, RadiographLoadError, load_radiograph
from tests.factories import tiny_alta_config

SIIM_DICOM = "dicom/siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
RG1_DICOM = "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"


def _gradient(width: int, height: int) -> np.ndarray:
    """An asymmetric 8-bit test pattern (no two rows or columns alike), so any rotation or flip shows."""
    return ((np.arange(height)[:, None] * 7 + np.arange(width)[None, :] * 3) % 251).astype(np.uint8)


@pytest.fixture
def tokenizer(golden_dir):
    return BertTokenizer.from_pretrained(golden_dir / "BiomedVLP-CXR-BERT-specialized", model_max_length=128)


# ----- oversized images --------------------------------------------------------------------------------------------
@pytest.fixture
def bomb_limit(monkeypatch):
    """Pillow's limit lowered so a 96x64 file stands for a 14000x14000 radiograph: refused above 2 x 2000 pixels."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    return 4000


def test_oversized_jpeg_is_decoded_at_the_dct_scale_that_fits(tmp_path, bomb_limit):
    path = tmp_path / "huge.jpg"
    Image.fromarray(_gradient(96, 64)).save(path, quality=95)
    with pytest.raises(Image.DecompressionBombError):  # what escaped before
        Image.open(path)
    image = load_radiograph(path)
    assert image.size == (48, 32) and 48 * 32 <= bomb_limit  # 1/2 scale: the first that fits
    with JpegImagePlugin.JpegImageFile(path) as reference:  # Pillow's own half-scale decode, without its check
        reference.draft("L", (48, 32))
        np.testing.assert_array_equal(np.asarray(image), np.asarray(reference.convert("L")))
    assert load_radiograph(path, min_size=16).size == (24, 16)  # the caller's smaller request still wins


def test_oversized_non_jpeg_is_refused_by_name_and_skipped_by_batch_jobs(tmp_path, monkeypatch, tokenizer):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60000)  # refused above 120000 pixels; the 224-px crops fit
    huge = tmp_path / "huge.png"
    Image.fromarray(_gradient(400, 320)).save(huge)
    with pytest.raises(RadiographLoadError, match="too large to decode safely") as info:
        load_radiograph(huge)
    assert info.value.source == str(huge)
    good = tmp_path / "good.png"
    Image.fromarray(_gradient(300, 260)).save(good)
    model = AltaModel(tiny_alta_config()).eval()
    result = embed_images(model, AltaProcessor(AltaImageProcessor(), tokenizer), [str(good), str(huge), str(good)],
                          batch_size=2, progress=False)
    assert result.indices.tolist() == [0, 2] and [f["index"] for f in result.failures] == [1]
    assert str(huge) in result.failures[0]["error"]
    torch.testing.assert_close(result.embeddings[0], result.embeddings[1])  # the work around it is intact


# ----- EXIF orientation --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation, transpose", [(3, Image.Transpose.ROTATE_180), (6, Image.Transpose.ROTATE_270),
                                                    (8, Image.Transpose.ROTATE_90)])
def test_exif_orientation_is_applied_to_files_and_pil_images(tmp_path, orientation, transpose):
    stored = Image.fromarray(_gradient(40, 24))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "rotated.png"  # lossless, so the comparison is exact
    stored.save(path, exif=exif)
    expected = np.asarray(stored.transpose(transpose))
    np.testing.assert_array_equal(np.asarray(load_radiograph(path)), expected)
    with Image.open(path) as opened:
        np.testing.assert_array_equal(np.asarray(load_radiograph(opened)), expected)
        # a user who already applied the orientation is not rotated twice (exif_transpose drops the tag)
        np.testing.assert_array_equal(np.asarray(load_radiograph(ImageOps.exif_transpose(opened))), expected)


def test_exif_orientation_reaches_the_processor(tmp_path):
    stored = Image.fromarray(_gradient(300, 260))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    processor = AltaImageProcessor()
    upright = processor.preprocess_one(ImageOps.exif_transpose(Image.open(path)))
    torch.testing.assert_close(processor.preprocess_one(str(path)), upright)


# ----- numbers -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "values, problem",
    [
        (np.linspace(0, 100, 32 * 32).reshape(32, 32), "fractions outside"),  # a [0, 100] image
        (np.linspace(-2.5, 3.0, 32 * 32).reshape(32, 32), "negative"),  # z-scored
        (np.linspace(1.5, 200.5, 32 * 32).reshape(32, 32).astype(np.float32), "fractions outside"),
        (np.arange(32 * 32, dtype=np.int32).reshape(32, 32) - 5, "negative"),
    ],
)
def test_float_ranges_without_one_meaning_are_refused(values, problem):
    with pytest.raises(RadiographLoadError, match=problem) as info:
        load_radiograph(values)
    assert "array of shape (32, 32)" in str(info.value) and "[0, 1]" in str(info.value)
    with pytest.raises(RadiographLoadError, match=problem):
        AltaImageProcessor()(values)


def test_processor_output_fed_back_is_refused(realdata_dir):
    pixel_values = AltaImageProcessor()(str(realdata_dir / "images/nih_cxr14/00000001_000.png"))["pixel_values"][0]
    with pytest.raises(RadiographLoadError, match="negative pixel values"):
        load_radiograph(pixel_values)


def test_float_rule_keeps_the_readable_ranges():
    gray = _gradient(32, 24)
    np.testing.assert_array_equal(np.asarray(load_radiograph(gray.astype(np.float32))), gray)  # whole numbers
    np.testing.assert_array_equal(np.asarray(load_radiograph(gray / 255.0)), gray)  # [0, 1]
    deep = gray.astype(np.float64) * 16  # whole numbers above 255: deep data, scaled by the maximum
    np.testing.assert_array_equal(np.asarray(load_radiograph(deep)), np.rint(deep * 255.0 / deep.max()))
    halves = torch.from_numpy(gray / 255.0).to(torch.bfloat16)  # NumPy has no bfloat16
    assert np.abs(np.asarray(load_radiograph(halves)).astype(int) - gray).max() <= 1


# ----- damaged DICOM files -----------------------------------------------------------------------------------------
def test_dicom_cut_in_half_says_truncated(tmp_path, realdata_dir):
    data = (realdata_dir / SIIM_DICOM).read_bytes()
    path = tmp_path / "half.dcm"
    path.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while reading a cut file; the error is what counts
        with pytest.raises(RadiographLoadError, match="truncated") as info:
            load_radiograph(path)
    assert info.value.source == str(path) and "no pixel data" not in str(info.value).lower()


def test_uncompressed_dicom_cut_short_names_the_missing_bytes(tmp_path, realdata_dir):
    data = (realdata_dir / RG1_DICOM).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.raises(RadiographLoadError, match="less than expected"):
        load_radiograph(path)


def test_dicom_with_a_corrupt_header_says_corrupt(tmp_path, realdata_dir):
    data = (realdata_dir / SIIM_DICOM).read_bytes()
    path = tmp_path / "corrupt.dcm"
    path.write_bytes(data[:200] + b"\xff" * 400 + data[600:])  # the preamble and DICM marker survive
    with pytest.raises(RadiographLoadError, match="header is corrupt") as info:
        load_radiograph(path)
    assert str(path) in str(info.value)


# ----- text --------------------------------------------------------------------------------------------------------
def test_empty_text_list_is_a_clear_error(tokenizer):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        processor(text=[])
    with pytest.raises(ValueError, match=r"text\[1\]` is a int"):
        processor(text=["effusion", 3])


@pytest.mark.parametrize("glue", ["\x00", "\x07", "\ufffd", "\u200b", "\x1b"])
def test_control_characters_separate_words_instead_of_gluing_them(tokenizer, glue):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    glued = processor(text=[f"no{glue}pleural{glue}effusion"])["input_ids"]
    spaced = processor(text=["no pleural effusion"])["input_ids"]
    torch.testing.assert_close(glued, spaced)
    assert "##" not in " ".join(tokenizer.convert_ids_to_tokens(glued[0].tolist()))


def test_control_characters_in_a_training_report(tokenizer, realdata_dir):
    processor = AltaProcessor(AltaImageProcessor(), tokenizer)
    image = str(realdata_dir / "images/nih_cxr14/00000001_000.png")

    def sample(report):
        return processor.preprocess_study(image, report=report, generator=torch.Generator().manual_seed(3), augment=False)

    glued, clean = sample("No\x00effusion. Heart\x00size normal."), sample("No effusion. Heart size normal.")
    for key in ("input_ids", "mlm_input_ids", "mlm_labels"):
        torch.testing.assert_close(glued[key], clean[key])
