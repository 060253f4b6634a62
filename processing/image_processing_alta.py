"""Image processor for ALTA: chest radiographs to normalised 3-channel tensors, for inference and for training studies.

Evaluation transform (the official one): shorter side to `size["shortest_edge"]` (bicubic), centre crop to
`crop_size`, gray replicated to 3 channels, `(x / 255 - mean) / std`.

Training transform (per study, official recipe): every view slot is prepared like the evaluation transform and then
augmented (random affine + brightness/contrast jitter); the current frontal view is prepared once at the reconstruction
geometry (`reconstruction_size` then `reconstruction_crop_size`), augmented, and its normalised tensor is resized with
antialiased bicubic interpolation to give slot 0, so the encoder input and the reconstruction target see the same
augmentation. The current and prior frontal views share one augmentation draw, both laterals another.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_base import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

from .augmentation_alta import AugmentationSettings, apply_augmentation, draw_augmentation
from .radiograph_io import RadiographLoadError, load_radiograph

__all__ = ["ALTA_IMAGE_MEAN", "ALTA_IMAGE_STD", "AltaImageProcessor", "AltaImageProcessorKwargs"]

# Statistics of MIMIC-CXR-JPG used by ALTA (one value for every channel: the channels are copies of the gray image).
ALTA_IMAGE_MEAN = [0.4785, 0.4785, 0.4785]
ALTA_IMAGE_STD = [0.2834, 0.2834, 0.2834]

# Slot order of a training study (the model's view slots); the view columns of every dataset follow it.
STUDY_VIEWS = ("frontal", "lateral", "prior_frontal", "prior_lateral")
# Views that share an augmentation draw: 0 = the frontal pair, 1 = the lateral pair.
_DRAW_OF_VIEW = {"frontal": 0, "lateral": 1, "prior_frontal": 0, "prior_lateral": 1}
_RETURN_TENSORS = ("pt", "np", None)


class AltaImageProcessorKwargs(ImagesKwargs, total=False):
    reconstruction_size: int
    reconstruction_crop_size: int
    draft_decoding: bool
    dicom_lut: bool
    augment_degrees: float
    augment_translate: float
    augment_scale_min: float
    augment_scale_max: float
    augment_shear: float
    augment_brightness: float
    augment_contrast: float


def _resize_shorter_side(image: Image.Image, shorter: int, resample) -> Image.Image:
    """Shorter side to `shorter`, the other side truncated (torchvision's `Resize(int)` on PIL images)."""
    width, height = image.size
    if width <= height:
        size = (shorter, int(shorter * height / width))
    else:
        size = (int(shorter * width / height), shorter)
    return image if size == image.size else image.resize(size, resample)


def _center_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """torchvision's centre crop: the offset is rounded half to even, which can differ by one pixel from `//`."""
    if image.width < width or image.height < height:
        raise ValueError(f"cannot centre-crop {width}x{height} from an image of {image.width}x{image.height}")
    top = int(round((image.height - height) / 2.0))
    left = int(round((image.width - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


class AltaImageProcessor(PilBackend):
    r"""
    Constructs an ALTA image processor. Inputs are anything [`load_radiograph`] reads: paths to JPEG/PNG/DICOM files,
    PIL images, NumPy arrays or torch tensors.

    Args:
        size (`dict[str, int]`, *optional*, defaults to `{"shortest_edge": 256}`): resize target of the shorter side.
        crop_size (`dict[str, int]`, *optional*, defaults to `{"height": 224, "width": 224}`): centre crop = model input.
        reconstruction_size (`int`, *optional*, defaults to 512): shorter side of the current frontal view before its
            crop, in training.
        reconstruction_crop_size (`int`, *optional*, defaults to 448): the reconstruction target's side.
        draft_decoding (`bool`, *optional*, defaults to `True`): decode JPEG files at a reduced DCT scale when the
            file is much larger than needed.
        dicom_lut (`bool`, *optional*, defaults to `False`): apply the DICOM modality and VOI LUT (window) when reading
            DICOM files (see [`load_radiograph`]); by default the stored values are scaled by their maximum, as ALTA's
            evaluation does.
        augment_* : ranges of the training augmentation (official recipe by default).
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = AltaImageProcessorKwargs
    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    image_mean = ALTA_IMAGE_MEAN
    image_std = ALTA_IMAGE_STD
    reconstruction_size = 512
    reconstruction_crop_size = 448
    draft_decoding = True
    dicom_lut = False
    # the official ranges, as AugmentationSettings defines them
    augment_degrees = AugmentationSettings.degrees
    augment_translate = AugmentationSettings.translate
    augment_scale_min = AugmentationSettings.scale_min
    augment_scale_max = AugmentationSettings.scale_max
    augment_shear = AugmentationSettings.shear
    augment_brightness = AugmentationSettings.brightness
    augment_contrast = AugmentationSettings.contrast

    def __init__(self, **kwargs):
        # the slots are STUDY_VIEWS, not a setting; configs saved by earlier versions still say 4
        slots = kwargs.pop("num_view_slots", len(STUDY_VIEWS))
        if slots != len(STUDY_VIEWS):
            raise ValueError(f"the image processor fills exactly {len(STUDY_VIEWS)} view slots ({', '.join(STUDY_VIEWS)}), "
                             f"got num_view_slots={slots}")
        super().__init__(**kwargs)
        if self.reconstruction_crop_size > self.reconstruction_size:
            raise ValueError(
                f"reconstruction_crop_size ({self.reconstruction_crop_size}) exceeds reconstruction_size "
                f"({self.reconstruction_size})"
            )
        if min(self.crop_size.height, self.crop_size.width) > self.size.shortest_edge:
            raise ValueError(f"crop_size {dict(self.crop_size)} exceeds size {dict(self.size)}")

    @property
    def num_view_slots(self) -> int:
        return len(STUDY_VIEWS)

    # ----- pieces ------------------------------------------------------------------------------------------------
    @property
    def augmentation_settings(self) -> AugmentationSettings:
        return AugmentationSettings(
            degrees=self.augment_degrees,
            translate=self.augment_translate,
            scale_min=self.augment_scale_min,
            scale_max=self.augment_scale_max,
            shear=self.augment_shear,
            brightness=self.augment_brightness,
            contrast=self.augment_contrast,
        )

    def _load(self, source, shorter_side: int) -> Image.Image:
        return load_radiograph(
            source, min_size=shorter_side if self.draft_decoding else None, dicom_lut=self.dicom_lut
        )

    def _to_tensor(self, image: Image.Image) -> torch.Tensor:
        """8-bit gray -> normalised float tensor `(3, H, W)` (channels as ALTA's 3-channel input)."""
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        pixels = pixels * self.rescale_factor if self.do_rescale else pixels
        pixels = pixels.expand(len(self.image_mean), -1, -1)
        if self.do_normalize:
            mean = torch.tensor(self.image_mean, dtype=torch.float32)[:, None, None]
            std = torch.tensor(self.image_std, dtype=torch.float32)[:, None, None]
            pixels = (pixels - mean) / std
        return pixels.contiguous()

    def _resize_and_crop(self, image: Image.Image, shorter_side: int, crop_height: int, crop_width: int) -> Image.Image:
        image = _resize_shorter_side(image, shorter_side, self.resample) if self.do_resize else image
        return _center_crop(image, crop_height, crop_width) if self.do_center_crop else image

    # ----- evaluation --------------------------------------------------------------------------------------------
    def preprocess(self, images, return_tensors="pt", **kwargs) -> BatchFeature:
        """
        The evaluation transform of one image or a list of images -> `pixel_values` `(N, 3, crop_h, crop_w)`.
        Raises `RadiographLoadError` for an unreadable input.
        """
        if kwargs:
            unknown = sorted(set(kwargs) - set(self.valid_kwargs.__annotations__))
            if unknown:
                raise TypeError(f"unexpected arguments for AltaImageProcessor: {unknown}")
            processor = copy.deepcopy(self)
            processor._set_attributes(**kwargs)
            return processor.preprocess(images, return_tensors=return_tensors)
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) == 0:
            raise ValueError("no images given")
        tensors = [self.preprocess_one(image) for image in images]
        pixel_values = torch.stack(tensors)
        if return_tensors not in _RETURN_TENSORS:
            raise ValueError(f"return_tensors must be one of {_RETURN_TENSORS}, got {return_tensors!r}")
        if return_tensors in (None, "np"):
            pixel_values = pixel_values.numpy()
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=None)

    def preprocess_one(self, image) -> torch.Tensor:
        """The evaluation transform of one input -> `(3, crop_h, crop_w)`."""
        shorter = self.size.shortest_edge
        image = self._load(image, shorter)
        return self._to_tensor(self._resize_and_crop(image, shorter, self.crop_size.height, self.crop_size.width))

    # ----- training ----------------------------------------------------------------------------------------------
    def preprocess_study(
        self,
        frontal,
        lateral=None,
        prior_frontal=None,
        prior_lateral=None,
        generator: torch.Generator | None = None,
        augment: bool = True,
        dropped_views: list | None = None,
    ) -> dict[str, torch.Tensor]:
        """
        The training transform of one study.

        Args:
            frontal: the current frontal view (required). lateral, prior_frontal, prior_lateral: the other views or
                `None` when absent (their slot is zeros and `view_mask` 0).
            generator: source of all randomness (two augmentation draws, always consumed in the same order).
            augment: `False` gives the deterministic evaluation geometry (validation of a training set).
            dropped_views: if a list is given, an optional view that cannot be read (`RadiographLoadError`) is made
                absent and its error appended here instead of being raised; the current frontal view always raises.

        Returns:
            `pixel_values` `(S, 3, crop_h, crop_w)`, `view_mask` `(S,)` long, `target_pixel_values` `(3, R, R)`.
        """
        if frontal is None:
            raise ValueError("a study needs its current frontal view")
        settings = self.augmentation_settings
        draws = [draw_augmentation(settings, generator), draw_augmentation(settings, generator)]
        views = {"frontal": frontal, "lateral": lateral, "prior_frontal": prior_frontal, "prior_lateral": prior_lateral}

        def prepare(source, view, shorter, crop_height, crop_width):
            image = self._resize_and_crop(self._load(source, shorter), shorter, crop_height, crop_width)
            if augment:
                image = apply_augmentation(image, draws[_DRAW_OF_VIEW[view]], settings)
            return self._to_tensor(image)

        crop_height, crop_width = self.crop_size.height, self.crop_size.width
        target = prepare(frontal, "frontal", self.reconstruction_size, self.reconstruction_crop_size,
                         self.reconstruction_crop_size)
        # slot 0 is the augmented target resized, exactly as the official model resizes its normalised 448 input
        slot_zero = F.interpolate(target[None], size=(crop_height, crop_width), mode="bicubic", align_corners=False,
                                  antialias=True)[0]
        pixel_values = torch.zeros(len(STUDY_VIEWS), len(self.image_mean), crop_height, crop_width)
        view_mask = torch.zeros(len(STUDY_VIEWS), dtype=torch.long)
        pixel_values[0], view_mask[0] = slot_zero, 1
        for slot, view in enumerate(STUDY_VIEWS[1:], start=1):
            if views[view] is None:
                continue
            try:
                pixel_values[slot] = prepare(views[view], view, self.size.shortest_edge, crop_height, crop_width)
            except RadiographLoadError as error:
                if dropped_views is None:
                    raise
                dropped_views.append(error)
                continue
            view_mask[slot] = 1
        return {"pixel_values": pixel_values, "view_mask": view_mask, "target_pixel_values": target}
