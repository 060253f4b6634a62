"""ALTA's training augmentation: a random affine transform and brightness/contrast jitter on 8-bit grayscale images.

The parameters of one draw are sampled once and applied to several images (the current and prior frontal views share
a draw; both lateral views share another), so a draw is a value of its own (`AugmentationDraw`). The semantics follow
torchvision's `RandomAffine(degrees, translate, scale, shear)` and `ColorJitter(brightness, contrast)` as the official
recipe uses them: translations are fractions of the image size, shear is an x-shear in degrees, the empty area is
filled with 0, brightness blends with black, contrast blends with the image's mean gray, and the two jitters are applied
in a random order.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

__all__ = ["AugmentationDraw", "AugmentationSettings", "apply_augmentation", "draw_augmentation"]

_NUM_UNIFORMS = 8


@dataclass(frozen=True)
class AugmentationSettings:
    """Ranges of the random transforms (official recipe by default)."""

    degrees: float = 20.0
    translate: float = 0.1
    scale_min: float = 0.95
    scale_max: float = 1.05
    shear: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    resample: int = Image.Resampling.NEAREST  # torchvision's RandomAffine default, used by the official recipe

    def __post_init__(self):
        if self.degrees < 0 or self.shear < 0 or not 0 <= self.translate <= 1:
            raise ValueError(f"augmentation ranges must be non-negative (translate <= 1), got {self}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"augmentation scale range must satisfy 0 < min <= max, got {self.scale_min}, {self.scale_max}")
        if not (0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError(f"brightness/contrast jitter must lie in [0, 1), got {self.brightness}, {self.contrast}")


@dataclass(frozen=True)
class AugmentationDraw:
    """One sampled transform; geometry is relative to the image size, so one draw fits images of any size."""

    angle: float  # degrees, counter-clockwise
    translate_x: float  # fraction of the width
    translate_y: float  # fraction of the height
    scale: float
    shear: float  # degrees, x-shear
    brightness: float  # factor; 1 = unchanged
    contrast: float  # factor; 1 = unchanged
    brightness_first: bool


def draw_augmentation(settings: AugmentationSettings, generator: torch.Generator | None) -> AugmentationDraw:
    """Sample one draw; always consumes the same amount of `generator` state, so the streams of a sample stay aligned."""
    u = torch.rand(_NUM_UNIFORMS, generator=generator, dtype=torch.float64).tolist()

    def between(low: float, high: float, value: float) -> float:
        return low + (high - low) * value

    return AugmentationDraw(
        angle=between(-settings.degrees, settings.degrees, u[0]),
        translate_x=between(-settings.translate, settings.translate, u[1]),
        translate_y=between(-settings.translate, settings.translate, u[2]),
        scale=between(settings.scale_min, settings.scale_max, u[3]),
        shear=between(-settings.shear, settings.shear, u[4]),
        brightness=between(1 - settings.brightness, 1 + settings.brightness, u[5]),
        contrast=between(1 - settings.contrast, 1 + settings.contrast, u[6]),
        brightness_first=u[7] < 0.5,
    )


def _inverse_affine_coefficients(draw: AugmentationDraw, width: int, height: int) -> tuple[float, ...]:
    """
    PIL's AFFINE transform maps every OUTPUT pixel to the input point it samples, so it needs the inverse of the
    forward map  x -> centre + translation + R(angle) . Shear_x(shear) . scale . (x - centre).
    """
    centre_x, centre_y = width * 0.5, height * 0.5
    # whole pixels, as torchvision rounds its translations
    shift_x, shift_y = round(draw.translate_x * width), round(draw.translate_y * height)
    theta, shear = math.radians(draw.angle), math.radians(draw.shear)
    # image coordinates have y pointing down: a counter-clockwise rotation on screen is this matrix
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    shearing = np.array([[1.0, math.tan(shear)], [0.0, 1.0]])
    linear = rotation @ shearing * draw.scale
    centre = np.array([centre_x, centre_y])
    offset = centre + np.array([shift_x, shift_y]) - linear @ centre
    inverse = np.linalg.inv(linear)
    inverse_offset = -inverse @ offset
    return (inverse[0, 0], inverse[0, 1], inverse_offset[0], inverse[1, 0], inverse[1, 1], inverse_offset[1])


def apply_augmentation(image: Image.Image, draw: AugmentationDraw, settings: AugmentationSettings) -> Image.Image:
    """Apply one draw to an 8-bit grayscale image of any size (affine first, then the two jitters)."""
    image = image.transform(
        image.size,
        Image.Transform.AFFINE,
        _inverse_affine_coefficients(draw, *image.size),
        resample=settings.resample,
        fillcolor=0,
    )
    jitters = [(ImageEnhance.Brightness, draw.brightness), (ImageEnhance.Contrast, draw.contrast)]
    if not draw.brightness_first:
        jitters.reverse()
    for enhancer, factor in jitters:
        image = enhancer(image).enhance(factor)
    return image
