"""load_radiograph on real radiographs / DICOMs, every input kind, fast JPEG decoding, and bad input."""

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from alta_hf.processing import RadiographLoadError, load_radiograph

NIH_PNG = "images/nih_cxr14/00000001_000.png"
SIIM_MONO2 = "dicom/siim_nih_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
SIIM_MONO1 = "dicom/siim_nih_fake_MONOCHROME1.dcm"
RG1_UNCOMPRESSED = "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"
RG1_JPEG2000 = "dicom/nema_wg04_RG1_J2KI_cr_chest_pa.dcm"
MIMIC_STYLE_JPG = "derived/rg1_mimic_cxr_jpg_style.jpg"


def test_png_is_read_unchanged(realdata_dir):
    image = load_radiograph(realdata_dir / NIH_PNG)
    assert image.mode == "L"
    np.testing.assert_array_equal(np.asarray(image), np.asarray(Image.open(realdata_dir / NIH_PNG).convert("L")))


def test_monochrome1_is_the_inverse_of_monochrome2(realdata_dir):
    mono2 = np.asarray(load_radiograph(realdata_dir / SIIM_MONO2)).astype(int)
    mono1 = np.asarray(load_radiograph(realdata_dir / SIIM_MONO1)).astype(int)
    assert mono2.shape == (1024, 1024) and mono2.std() > 20
    np.testing.assert_array_equal(mono1, 255 - mono2)


def test_jpeg_baseline_dicom_scaled_by_its_maximum(realdata_dir):
    """The official RSNA recipe: stored values * 255 / max, rounded."""
    stored = pydicom.dcmread(realdata_dir / SIIM_MONO2).pixel_array.astype(np.float64)
    expected = np.clip(np.rint(stored * 255.0 / stored.max()), 0, 255)
    np.testing.assert_array_equal(np.asarray(load_radiograph(realdata_dir / SIIM_MONO2)), expected)


def test_16_bit_monochrome1_dicom(realdata_dir):
    dataset = pydicom.dcmread(realdata_dir / RG1_UNCOMPRESSED)
    assert dataset.BitsStored == 15 and dataset.PhotometricInterpretation == "MONOCHROME1"
    stored = dataset.pixel_array.astype(np.float64)
    expected = 255 - np.clip(np.rint(stored * 255.0 / stored.max()), 0, 255)
    image = load_radiograph(realdata_dir / RG1_UNCOMPRESSED)
    assert image.size == (1841, 1955)
    np.testing.assert_array_equal(np.asarray(image), expected)


def test_jpeg2000_dicom_matches_the_uncompressed_file(realdata_dir):
    lossless = np.asarray(load_radiograph(realdata_dir / RG1_UNCOMPRESSED)).astype(float)
    lossy = np.asarray(load_radiograph(realdata_dir / RG1_JPEG2000)).astype(float)
    assert lossy.shape == lossless.shape
    assert np.abs(lossy - lossless).mean() < 1.0  # lossy compression, measured 0.49 gray levels


def test_dicom_detected_by_content_without_suffix(realdata_dir, tmp_path):
    renamed = tmp_path / "image.bin"
    renamed.write_bytes((realdata_dir / SIIM_MONO2).read_bytes())
    np.testing.assert_array_equal(np.asarray(load_radiograph(renamed)), np.asarray(load_radiograph(realdata_dir / SIIM_MONO2)))


def test_16_bit_png_scaled_by_its_maximum(tmp_path):
    pixels = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 13 % 4096).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    expected = np.clip(np.rint(pixels * 255.0 / pixels.max()), 0, 255)
    np.testing.assert_array_equal(np.asarray(load_radiograph(path)), expected)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "CMYK", "L", "P", "I;16"])
def test_pil_modes_become_gray(mode):
    gray = (np.add.outer(np.arange(40), np.arange(50)) % 256).astype(np.uint8)
    source = Image.fromarray(gray, mode="L")
    image = source.convert(mode) if mode != "I;16" else Image.fromarray(gray.astype(np.uint16) * 200)
    result = np.asarray(load_radiograph(image)).astype(int)
    deep = gray.astype(np.float64) * 200
    expected = gray if mode != "I;16" else np.rint(deep * 255.0 / deep.max())
    assert result.shape == (40, 50)
    assert np.abs(result - expected).max() <= 1  # colour conversions round


def test_arrays_and_tensors():
    gray = np.linspace(0, 1, 32 * 24, dtype=np.float32).reshape(24, 32)
    expected = np.rint(gray * 255)
    np.testing.assert_array_equal(np.asarray(load_radiograph(gray)), expected)  # float [0, 1]
    np.testing.assert_array_equal(np.asarray(load_radiograph(torch.from_numpy(gray)[None].repeat(3, 1, 1))), expected)  # CHW
    np.testing.assert_array_equal(np.asarray(load_radiograph((gray * 255).round().astype(np.uint8)[..., None])), expected)
    deep = (gray * 1000).astype(np.int32)
    np.testing.assert_array_equal(np.asarray(load_radiograph(deep)), np.rint(deep * 255.0 / deep.max()))


def test_draft_decoding_is_close_to_full_decoding(realdata_dir, tmp_path):
    """A MIMIC-size JPEG decoded at a reduced DCT scale, then resized, stays within a small tolerance."""
    big = Image.open(realdata_dir / MIMIC_STYLE_JPG).resize((2544, 3056), Image.Resampling.BICUBIC)
    path = tmp_path / "mimic_size.jpg"
    big.save(path, quality=95)
    full = load_radiograph(path)
    reduced = load_radiograph(path, min_size=256)
    assert full.size == (2544, 3056)
    assert 256 <= min(reduced.size) < 512  # 1/8 scale: 318 x 382
    target = (256, int(256 * 3056 / 2544))
    a = np.asarray(full.resize(target, Image.Resampling.BICUBIC), dtype=float)
    b = np.asarray(reduced.resize(target, Image.Resampling.BICUBIC), dtype=float)
    assert np.abs(a - b).mean() < 1.5  # measured about 0.6 gray levels
    assert np.percentile(np.abs(a - b), 99) < 8


def _write_dicom_without_pixels(path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.PatientID = "no-pixels"
    dataset.Modality = "CR"
    dataset.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda d, r: d / "missing.jpg", "file not found"),
        (lambda d, r: _write(d / "empty.jpg", b""), "empty"),
        (lambda d, r: _write(d / "notes.png", b"this is a text file, not an image\n" * 20), "not an image"),
        (lambda d, r: _write(d / "truncated.jpg", (r / MIMIC_STYLE_JPG).read_bytes()[:20000]), "truncated or corrupt"),
        (lambda d, r: _write(d / "garbage.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40), "not an image"),
        (lambda d, r: _dicom(d / "nopixels.dcm"), "no pixel data"),
        (lambda d, r: _png(d / "tiny.png", np.zeros((1, 1), np.uint8)), "1x1"),
    ],
)
def test_bad_files_raise_a_typed_error_naming_the_file(tmp_path, realdata_dir, make, problem):
    path = make(tmp_path, realdata_dir)
    with pytest.raises(RadiographLoadError, match=problem) as info:
        load_radiograph(path)
    assert str(path) in str(info.value) and info.value.source == str(path)


@pytest.mark.parametrize(
    "value, problem",
    [
        (np.full((32, 32), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((32, 32, 2), dtype=np.uint8), "channel"),
        (np.zeros((5, 32, 32, 3), dtype=np.uint8), "dimensions"),
        (np.zeros((32, 32), dtype=bool), "data type"),
        (torch.zeros(1, 1), "1x1"),
        ("not a path object".encode(), "unsupported input type"),
    ],
)
def test_bad_arrays_raise_a_typed_error(value, problem):
    with pytest.raises(RadiographLoadError, match=problem):
        load_radiograph(value)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _png(path, pixels):
    Image.fromarray(pixels).save(path)
    return path


def _dicom(path):
    _write_dicom_without_pixels(path)
    return path
