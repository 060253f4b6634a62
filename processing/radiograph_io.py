"""Reading radiographs into 8-bit grayscale PIL images: image files, DICOM files, PIL images, arrays and tensors.

Every failure is a `RadiographLoadError` naming the input and the problem, so dataset code can catch exactly that
type, skip the sample and count it.
"""

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["MIN_IMAGE_SIDE", "RadiographLoadError", "describe_source", "load_radiograph"]

# Smaller inputs are thumbnails or mistakes (a 1x1 placeholder), not radiographs.
MIN_IMAGE_SIDE = 16
_DICOM_SUFFIXES = {".dcm", ".dicom"}
_DICOM_MAGIC_OFFSET = 128


class RadiographLoadError(ValueError):
    """An input that cannot be turned into a radiograph; the message names the input and the problem."""

    def __init__(self, source, problem: str):
        self.source = describe_source(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def describe_source(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return f"PIL image (mode {source.mode}, {source.width}x{source.height})"
    shape = getattr(source, "shape", None)
    if shape is not None:
        return f"{type(source).__module__.split('.')[0]} array of shape {tuple(shape)} ({getattr(source, 'dtype', '?')})"
    return f"object of type {type(source).__name__}"


def load_radiograph(source, *, min_size: int | None = None, dicom_lut: bool = False) -> Image.Image:
    """
    Load a radiograph as an 8-bit grayscale (`"L"`) PIL image.

    Args:
        source: a path to an image file (JPEG, PNG, TIFF, ...) or a DICOM file, a PIL image, a NumPy array or a torch
            tensor (`(H, W)`, `(H, W, C)` or `(C, H, W)` with 1, 3 or 4 channels).
        min_size (`int`, *optional*): the smallest shorter side the caller needs. JPEG files are then decoded at a
            reduced DCT scale (1/2, 1/4 or 1/8) that keeps the shorter side at or above `min_size`: several times faster
            for full-size radiographs, within a small tolerance of full decoding followed by the same resize.
        dicom_lut (`bool`, *optional*, defaults to `False`): for DICOM files, apply the modality LUT (rescale slope and
            intercept) and the VOI LUT or window (centre/width) the file carries, with pydicom, then stretch the
            result's range to 0-255. By default the stored values are scaled by their maximum, the rule of ALTA's
            evaluation and of MIMIC-CXR-JPG-like exports.

    Integer data deeper than 8 bits (16-bit PNG/TIFF, DICOM) is scaled to 0-255 by its maximum, DICOM MONOCHROME1 is
    inverted, colour images are converted to luminance.

    Raises:
        RadiographLoadError: missing, empty, truncated or unreadable files, DICOM without pixel data, non-finite values,
            unsupported channel counts, images smaller than `MIN_IMAGE_SIDE`.
    """
    if isinstance(source, (str, os.PathLike)):
        image = _load_file(Path(source), min_size, dicom_lut)
    elif isinstance(source, Image.Image):
        image = _pil_to_gray(source, source)
    elif isinstance(source, np.ndarray) or _is_torch_tensor(source):
        image = _array_to_gray(source, _to_numpy(source))
    else:
        raise RadiographLoadError(source, "unsupported input type; expected a path, PIL image, NumPy array or tensor")
    if min(image.size) < MIN_IMAGE_SIDE:
        raise RadiographLoadError(
            source, f"image is {image.width}x{image.height}; a radiograph needs at least {MIN_IMAGE_SIDE} pixels per side"
        )
    return image


def _is_torch_tensor(value) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    return value.detach().cpu().numpy()


def _load_file(path: Path, min_size: int | None, dicom_lut: bool = False) -> Image.Image:
    if not path.is_file():
        raise RadiographLoadError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise RadiographLoadError(path, "file is empty (0 bytes)")
    if _looks_like_dicom(path):
        return _load_dicom(path, dicom_lut)
    try:
        with Image.open(path) as image:
            if min_size and image.format == "JPEG":
                image.draft("L" if image.mode == "L" else image.mode, _draft_request(image.size, min_size))
            image.load()
            return _pil_to_gray(image, path)
    except UnidentifiedImageError:
        raise RadiographLoadError(path, "not an image file Pillow can read (nor a DICOM file)") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, RadiographLoadError):
            raise
        raise RadiographLoadError(path, f"truncated or corrupt image data ({error})") from None


def _draft_request(size: tuple[int, int], min_size: int) -> tuple[int, int]:
    """The size to ask `Image.draft` for: the image scaled so that its shorter side is `min_size` (never enlarged)."""
    width, height = size
    scale = min(1.0, min_size / min(width, height))
    return max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale)))


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        handle.seek(_DICOM_MAGIC_OFFSET)
        return handle.read(4) == b"DICM"


def _load_dicom(path: Path, dicom_lut: bool = False) -> Image.Image:
    """
    By default the official RSNA recipe: the stored pixel values scaled to 0-255 by their maximum (`|x| * 255 / max`,
    rounded and saturated, as OpenCV's `convertScaleAbs`), then inverted for MONOCHROME1; no modality or VOI LUT, as
    in the official evaluation. `dicom_lut=True` applies them instead (`_display_values`). Multi-frame files give
    their first frame.
    """
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # an optional dependency of remote code
        raise RadiographLoadError(path, "reading DICOM files needs pydicom (`pip install pydicom`)") from None
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise RadiographLoadError(path, f"unreadable DICOM file ({error})") from None
    if "PixelData" not in dataset and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
        raise RadiographLoadError(path, "DICOM file has no pixel data")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises many types for missing decoders and damaged data
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = getattr(syntax, "name", syntax)
        raise RadiographLoadError(path, f"cannot decode DICOM pixel data (transfer syntax {syntax_name}): {error}") from None
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples > 1:
        pixels = _luminance(np.asarray(pixels, dtype=np.float64), channel_axis=-1)
    if dicom_lut and samples == 1:  # the grey-level LUTs are defined for monochrome images only
        gray = _display_values(path, dataset, pixels)
    else:
        pixels = np.abs(np.asarray(pixels, dtype=np.float64))
        _check_finite(path, pixels)
        peak = pixels.max()
        scaled = np.clip(np.rint(pixels * (255.0 / peak)), 0, 255) if peak > 0 else pixels
        gray = scaled.astype(np.uint8)
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return Image.fromarray(gray, mode="L")


def _display_values(path: Path, dataset, pixels: np.ndarray) -> np.ndarray:
    """The grey levels a DICOM viewer shows: pydicom's modality LUT (rescale slope/intercept or LUT), then its VOI
    LUT or the first window (centre/width); the result's range stretched to 0-255 (before MONOCHROME1 inversion)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset, index=0)
    except (ValueError, TypeError, KeyError, IndexError) as error:  # malformed LUT or window attributes
        raise RadiographLoadError(path, f"cannot apply the DICOM modality/VOI LUT ({error})") from None
    values = np.asarray(values, dtype=np.float64)
    _check_finite(path, values)
    low, high = values.min(), values.max()
    scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _luminance(pixels: np.ndarray, channel_axis: int) -> np.ndarray:
    """ITU-R 601 luma, the weights of PIL's `convert("L")`."""
    weights = np.array([0.299, 0.587, 0.114])
    return np.tensordot(np.moveaxis(pixels, channel_axis, -1)[..., :3], weights, axes=([-1], [0]))


def _check_finite(source, pixels: np.ndarray) -> None:
    if pixels.size == 0:
        raise RadiographLoadError(source, "image has no pixels")
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise RadiographLoadError(source, "image contains NaN or infinite values")


def _pil_to_gray(image: Image.Image, source) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise RadiographLoadError(source, "image has no pixels")
    mode = image.mode
    if mode == "L":
        return image.copy() if image is source else image
    if mode in {"1", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "LA", "La", "RGBa"}:
        return image.convert("RGB").convert("L") if mode not in {"LA", "La"} else image.getchannel("L")
    # 16/32-bit integer and float modes: go through NumPy and scale like any deep array
    return _array_to_gray(source, np.asarray(image))


def _array_to_gray(source, array: np.ndarray) -> Image.Image:
    """Arrays: `(H, W)`, `(H, W, C)` or `(C, H, W)` with C in {1, 3, 4}; bool and complex data are refused."""
    array = np.asarray(array)
    if array.dtype.kind not in "uif":
        raise RadiographLoadError(source, f"unsupported data type {array.dtype}; expected integer or float pixels")
    if array.ndim == 3:
        if array.shape[-1] in (1, 3, 4):
            channel_axis = -1
        elif array.shape[0] in (1, 3, 4):
            channel_axis = 0
        else:
            raise RadiographLoadError(
                source, f"cannot find the channel axis of shape {array.shape}: expected 1, 3 or 4 channels first or last"
            )
        if array.shape[channel_axis] == 1:
            array = np.take(array, 0, axis=channel_axis)
        else:
            array = _luminance(array.astype(np.float64), channel_axis)
    elif array.ndim != 2:
        raise RadiographLoadError(source, f"expected a 2-D image or 3-D image with channels, got {array.ndim} dimensions")
    _check_finite(source, array)
    return Image.fromarray(_to_uint8(array), mode="L")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """
    8-bit data as is. Floats in [0, 1] are scaled by 255 (torch / ToTensor convention) and floats in [0, 255] are kept;
    deeper data (16-bit, larger floats) are scaled to 0-255 by their maximum, as the DICOM recipe does.
    """
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    low, high = values.min(), values.max()
    if low < 0:
        values = values - low
        high = high - low
    if array.dtype.kind == "f" and high <= 1.0:
        values = values * 255.0
    elif high > 255.0:
        values = values * (255.0 / high)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
