"""The DICOM modality + VOI LUT option of `load_radiograph` / `AltaImageProcessor(dicom_lut=True)`, checked against
the DICOM standard's formulas computed by hand; the default (stored values scaled by their maximum) is unchanged."""

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from alta_hf.evaluation import embed_images
from alta_hf.processing import AltaImageProcessor, load_radiograph

RG1_UNCOMPRESSED = "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"  # 15-bit MONOCHROME1 with a window, no rescale


def _stretched(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    return np.rint((values - values.min()) * 255.0 / (values.max() - values.min()))


def _linear_window(x: np.ndarray, center: float, width: float, y_min: float, y_max: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 (LINEAR)."""
    below, above = x <= center - 0.5 - (width - 1) / 2, x > center - 0.5 + (width - 1) / 2
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
    return np.where(below, y_min, np.where(above, y_max, inside))


def _write_dicom(path, stored: np.ndarray, **attributes) -> str:
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = stored.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    for name, value in attributes.items():
        setattr(dataset, name, value)
    dataset.PixelData = stored.astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.fixture
def ramp():
    return (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)


def test_default_keeps_the_maximum_rule(realdata_dir):
    stored = pydicom.dcmread(realdata_dir / RG1_UNCOMPRESSED).pixel_array.astype(np.float64)
    expected = 255 - np.clip(np.rint(stored * 255.0 / stored.max()), 0, 255)
    assert np.array_equal(np.asarray(load_radiograph(realdata_dir / RG1_UNCOMPRESSED)), expected)


def test_window_of_a_real_monochrome1_file(realdata_dir):
    path = realdata_dir / RG1_UNCOMPRESSED
    dataset = pydicom.dcmread(path)
    stored = dataset.pixel_array.astype(np.float64)
    windowed = _linear_window(stored, float(dataset.WindowCenter), float(dataset.WindowWidth), 0, 2**15 - 1)
    got = np.asarray(load_radiograph(path, dicom_lut=True)).astype(np.float64)
    assert np.abs(got - (255 - _stretched(windowed))).max() <= 1  # rounding of the window's float output
    assert np.abs(got - np.asarray(load_radiograph(path))).max() > 4  # the option changes the picture


def test_rescale_slope_intercept_then_window(tmp_path, ramp):
    path = _write_dicom(tmp_path / "rescaled.dcm", ramp, RescaleSlope=2, RescaleIntercept=-1000,
                        WindowCenter=2000, WindowWidth=3000)
    modality = ramp.astype(np.float64) * 2 - 1000
    # after a rescale, the window's output range is that of the rescaled values
    expected = _stretched(_linear_window(modality, 2000, 3000, modality.min(), modality.max()))
    got = np.asarray(load_radiograph(path, dicom_lut=True)).astype(np.float64)
    assert np.abs(got - expected).max() <= 1


def test_voi_lut_table_wins_over_the_window(tmp_path, ramp):
    table = np.concatenate([np.zeros(1000), np.linspace(0, 4095, 2096), np.full(1000, 4095)]).astype(np.uint16)
    voi = pydicom.Dataset()
    voi.LUTDescriptor = [len(table), 0, 12]
    voi.add_new(0x00283006, "US", table.tolist())  # LUTData as US (its keyword defaults to OW bytes)
    path = _write_dicom(tmp_path / "voi_lut.dcm", ramp, VOILUTSequence=pydicom.Sequence([voi]),
                        WindowCenter=100, WindowWidth=50)
    expected = _stretched(table[np.clip(ramp, 0, len(table) - 1)])
    assert np.array_equal(np.asarray(load_radiograph(path, dicom_lut=True)), expected)


def test_image_processor_option_is_saved_and_used(tmp_path, realdata_dir):
    path = realdata_dir / RG1_UNCOMPRESSED
    processor = AltaImageProcessor(dicom_lut=True)
    processor.save_pretrained(tmp_path)
    reloaded = AltaImageProcessor.from_pretrained(tmp_path)
    assert reloaded.dicom_lut is True and AltaImageProcessor().dicom_lut is False
    with_lut = reloaded(str(path))["pixel_values"]
    assert np.allclose(with_lut, AltaImageProcessor()(load_radiograph(path, dicom_lut=True))["pixel_values"])
    assert not np.allclose(with_lut, AltaImageProcessor()(str(path))["pixel_values"])


class _ImagesOnly:
    """The image half of an AltaProcessor, as evaluation calls it."""

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, images, return_tensors="pt"):
        return self.image_processor(images, return_tensors=return_tensors)


class _MeanGray(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def get_image_features(self, pixel_values):
        return pixel_values.flatten(1).mean(1, keepdim=True) * self.scale


def test_evaluation_reads_dicoms_with_the_processors_option(realdata_dir):
    path = str(realdata_dir / RG1_UNCOMPRESSED)
    embedded = {
        option: embed_images(_MeanGray(), _ImagesOnly(AltaImageProcessor(dicom_lut=option)), [path], progress=False)
        for option in (False, True)
    }
    for option, result in embedded.items():
        expected = AltaImageProcessor()(load_radiograph(path, dicom_lut=option))["pixel_values"].mean()
        torch.testing.assert_close(result.embeddings[0, 0], expected)
    assert not torch.allclose(embedded[False].embeddings, embedded[True].embeddings)
