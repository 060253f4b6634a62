"""Reading radiographs into 8-bit grayscale PIL images: image files, DICOM files, PIL images, arrays and tensors.

Every failure is a `RadiographLoadError` naming the input and the problem, so dataset code can catch exactly that
type, skip the sample and count it.
"""

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

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
    inverted, colour images are converted to luminance, the EXIF orientation of image files and PIL images is
    applied. Float pixels must lie in [0, 1] (scaled by 255) or be non-negative whole numbers (read as integer data);
    anything else (normalised or z-scored arrays) is refused rather than guessed. JPEG files above Pillow's
    decompression-bomb limit are decoded at the reduced DCT scale that fits under it; other formats that large are
    refused.

    Raises:
        RadiographLoadError: missing, empty, truncated or unreadable files, DICOM without pixel data, non-finite values,
            unsupported channel counts or float ranges, oversized non-JPEG files, images smaller than `MIN_IMAGE_SIDE`.
    """
    if isinstance(source, (str, os.PathLike)):
        image = _load_file(Path(source), min_size, dicom_lut)
    elif isinstance(source, Image.Image):
        image = _pil_to_gray(_apply_exif_orientation(source), source)
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
    value = value.detach().cpu()
    if not value.dtype.is_complex and value.dtype.is_floating_point and value.element_size() < 4:
        value = value.float()  # NumPy has no bfloat16
    return value.numpy()


def _load_file(path: Path, min_size: int | None, dicom_lut: bool = False) -> Image.Image:
    if not path.is_file():
        raise RadiographLoadError(path, "file not found" if not path.exists() else "not a regular file")
    if path.stat().st_size == 0:
        raise RadiographLoadError(path, "file is empty (0 bytes)")
    if _looks_like_dicom(path):
        return _load_dicom(path, dicom_lut)
    try:
        with _open_image(path) as image:
            if image.format == "JPEG":
                request = _jpeg_draft_request(image.size, min_size)
                if request is not None:
                    image.draft("L" if image.mode == "L" else image.mode, request)
            image.load()
            return _pil_to_gray(_apply_exif_orientation(image), path)
    except UnidentifiedImageError:
        raise RadiographLoadError(path, "not an image file Pillow can read (nor a DICOM file)") from None
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, RadiographLoadError):
            raise
        raise RadiographLoadError(path, f"truncated or corrupt image data ({error})") from None


def _pixel_limit() -> int | None:
    """Pillow's decompression-bomb limit (it refuses to open larger images); read at call time so that a user who
    raises `PIL.Image.MAX_IMAGE_PIXELS` for trusted files gets their limit."""
    return None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS


def _open_image(path: Path) -> Image.Image:
    """`Image.open`, except that a JPEG above the decompression-bomb limit is opened anyway: JPEG decodes at 1/2, 1/4
    or 1/8 scale, so `_jpeg_draft_request` can bring it under the limit before any pixel is decoded. Other formats
    that large would be decoded in full, so they are refused."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as error:
        with open(path, "rb") as handle:
            is_jpeg = handle.read(3) == b"\xff\xd8\xff"
        if not is_jpeg:
            raise RadiographLoadError(
                path, f"image too large to decode safely ({error}); only JPEG files this large are read (at reduced "
                "size): convert it to JPEG, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file",
            ) from None
        return JpegImagePlugin.JpegImageFile(path)


def _jpeg_draft_request(size: tuple[int, int], min_size: int | None) -> tuple[int, int] | None:
    """The size to ask `Image.draft` for (None: decode in full): the `min_size` request, reduced further when the
    image is above the pixel limit to the first DCT scale (1/2, 1/4, 1/8) that fits under it."""
    request = _draft_request(size, min_size) if min_size else None
    limit = _pixel_limit()
    width, height = size
    if limit is None or width * height <= limit:
        return request
    scale = next((s for s in (2, 4, 8) if -(-width // s) * -(-height // s) <= limit), 8)
    # draft picks the largest scale that keeps the image at or above the request: floor division asks for exactly 1/s
    fitted = (max(1, width // scale), max(1, height // scale))
    return fitted if request is None else (min(request[0], fitted[0]), min(request[1], fitted[1]))


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: phones and some scanners store it rotated with an EXIF Orientation tag."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not make the pixels unreadable
        return image
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise RadiographLoadError(path, f"unreadable DICOM file ({error})") from None
    if "PixelData" not in dataset and "FloatPixelData" not in dataset and "DoubleFloatPixelData" not in dataset:
        raise RadiographLoadError(path, _missing_pixels_problem(path, dataset, [str(w.message) for w in caught]))
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


def _missing_pixels_problem(path: Path, dataset, reader_warnings: list[str]) -> str:
    """Why a DICOM file has no pixel data: pydicom reads damaged files leniently and simply stops, so a file cut short
    or with a corrupt header would otherwise look like a valid DICOM object without an image."""
    cut = next((message for message in reader_warnings if "end of file" in message.lower()), None)
    if cut is not None:
        return f"DICOM file is truncated ({cut}); its pixel data is incomplete"
    if not any(keyword in dataset for keyword in ("SOPClassUID", "Modality", "Rows", "Columns", "PatientID")):
        size = path.stat().st_size
        return (f"DICOM header is corrupt or cut short: none of SOPClassUID, Modality, Rows, Columns could be read "
                f"from its {size:,} bytes, and there is no pixel data")
    if "Rows" in dataset and "Columns" in dataset:
        return (f"DICOM file declares a {dataset.Columns}x{dataset.Rows} image but has no pixel data (it was cut "
                f"short at {path.stat().st_size:,} bytes, or written without pixels)")
    return "DICOM file has no pixel data (a DICOM object without an image, e.g. a report)"


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
    try:
        return Image.fromarray(_to_uint8(array), mode="L")
    except _RangeError as error:
        raise RadiographLoadError(source, f"{error}{_RANGE_ADVICE}") from None


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """
    The one rule for numbers (docs/processing.md, "Inputs"): uint8 as is; other integers and non-negative whole-number
    floats up to 255 as is, deeper ones scaled to 0-255 by their maximum (as the DICOM recipe); other floats must lie
    in [0, 1] and are scaled by 255 (the torch / ToTensor convention). Negative values and fractional floats outside
    [0, 1] have no unambiguous grey level (a normalised or z-scored image, the processor's own output) and are refused.
    """
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    low, high = values.min(), values.max()
    if low < 0:
        raise _RangeError(f"negative pixel values (range [{low:.4g}, {high:.4g}])")
    if array.dtype.kind == "f" and high <= 1.0:
        values = values * 255.0
    elif array.dtype.kind == "f" and not np.array_equal(values, np.floor(values)):
        raise _RangeError(f"float pixels with fractions outside [0, 1] (range [{low:.4g}, {high:.4g}])")
    elif high > 255.0:
        values = values * (255.0 / high)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


class _RangeError(ValueError):
    """A value range `_to_uint8` cannot interpret; `_array_to_gray` names the input."""


_RANGE_ADVICE = (
    "; expected uint8, non-negative integers, or floats in [0, 1] (x 255). Pass the image before normalisation, "
    "or rescale it, e.g. (x - x.min()) / (x.max() - x.min())"
)
