"""The evaluation transform against a direct Pillow computation, and the training transform of a study."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from alta_hf.processing import AltaImageProcessor, AugmentationSettings, RadiographLoadError, apply_augmentation, draw_augmentation

NIH_PNG = "images/nih_cxr14/00000001_000.png"
NIH_PNG_2 = "images/nih_cxr14/00027426_000.png"
MIMIC_STYLE_JPG = "derived/rg1_mimic_cxr_jpg_style.jpg"
MEAN, STD = 0.4785, 0.2834


def _reference_eval(image: Image.Image, shorter=256, crop=224) -> np.ndarray:
    """The official evaluation transform written out with Pillow and NumPy (torchvision's size/crop rounding)."""
    width, height = image.size
    size = (shorter, int(shorter * height / width)) if width <= height else (int(shorter * width / height), shorter)
    image = image.resize(size, Image.Resampling.BICUBIC)
    top, left = int(round((image.height - crop) / 2.0)), int(round((image.width - crop) / 2.0))
    gray = np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0
    return np.repeat(((gray - MEAN) / STD)[None], 3, axis=0)


@pytest.mark.parametrize("name", [NIH_PNG, MIMIC_STYLE_JPG])
def test_eval_transform_equals_direct_pillow(realdata_dir, name):
    processor = AltaImageProcessor(draft_decoding=False)
    result = processor(str(realdata_dir / name))["pixel_values"]
    expected = _reference_eval(Image.open(realdata_dir / name).convert("L"))
    assert tuple(result.shape) == (1, 3, 224, 224)
    np.testing.assert_allclose(result[0].numpy(), expected, atol=1e-6)


def test_eval_transform_of_the_official_rgb_path_is_the_same(realdata_dir):
    """The official loader converts to RGB and back to gray after resizing: the values are the same as on gray."""
    rgb = Image.open(realdata_dir / NIH_PNG).convert("RGB")
    width, height = rgb.size
    resized = rgb.resize((256, int(256 * height / width)), Image.Resampling.BICUBIC)
    top = int(round((resized.height - 224) / 2.0))
    via_rgb = np.asarray(resized.crop((16, top, 240, top + 224)).convert("L"), dtype=np.float32) / 255.0
    result = AltaImageProcessor()(rgb)["pixel_values"][0, 0].numpy()
    np.testing.assert_allclose(result, (via_rgb - MEAN) / STD, atol=1e-6)


def test_center_crop_rounds_like_torchvision():
    """An odd margin (299 - 224 = 75) puts the crop at round(37.5) = 38, not 75 // 2 = 37."""
    pixels = np.tile(np.arange(299, dtype=np.uint8)[:, None], (1, 256))  # row index as value
    result = AltaImageProcessor(do_normalize=False)(pixels)["pixel_values"][0, 0].numpy() * 255
    assert round(float(result[0, 0])) == 38


def test_batch_of_inputs_and_overrides(realdata_dir):
    processor = AltaImageProcessor()
    batch = processor([str(realdata_dir / NIH_PNG), Image.open(realdata_dir / NIH_PNG_2)])["pixel_values"]
    assert tuple(batch.shape) == (2, 3, 224, 224)
    small = processor(str(realdata_dir / NIH_PNG), size={"shortest_edge": 128}, crop_size={"height": 112, "width": 112})
    assert tuple(small["pixel_values"].shape) == (1, 3, 112, 112)
    with pytest.raises(TypeError, match="unexpected"):
        processor(str(realdata_dir / NIH_PNG), colour="blue")


def _study(processor, realdata_dir, seed, **views):
    generator = torch.Generator().manual_seed(seed)
    return processor.preprocess_study(generator=generator, **views)


def test_study_shapes_absent_slots_and_slot_zero(realdata_dir):
    processor = AltaImageProcessor()
    sample = _study(processor, realdata_dir, 0, frontal=realdata_dir / MIMIC_STYLE_JPG, prior_frontal=realdata_dir / NIH_PNG)
    assert tuple(sample["pixel_values"].shape) == (4, 3, 224, 224)
    assert tuple(sample["target_pixel_values"].shape) == (3, 448, 448)
    assert sample["view_mask"].tolist() == [1, 0, 1, 0] and sample["view_mask"].dtype == torch.long
    assert not sample["pixel_values"][1].any() and not sample["pixel_values"][3].any()
    expected = F.interpolate(sample["target_pixel_values"][None], size=(224, 224), mode="bicubic", align_corners=False,
                             antialias=True)[0]
    torch.testing.assert_close(sample["pixel_values"][0], expected, rtol=0, atol=0)


def test_study_is_reproducible_and_varies_with_the_seed(realdata_dir):
    processor = AltaImageProcessor()
    views = dict(frontal=realdata_dir / NIH_PNG, lateral=realdata_dir / NIH_PNG_2)
    first, again, other = (_study(processor, realdata_dir, seed, **views) for seed in (3, 3, 4))
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert not torch.equal(first["pixel_values"][0], other["pixel_values"][0])
    assert not torch.equal(first["pixel_values"][1], other["pixel_values"][1])


def test_frontal_and_prior_frontal_share_a_draw_laterals_share_another(realdata_dir):
    processor = AltaImageProcessor()
    same, other = realdata_dir / NIH_PNG, realdata_dir / NIH_PNG_2
    sample = _study(processor, realdata_dir, 7, frontal=same, lateral=other, prior_frontal=same, prior_lateral=other)
    # both laterals: identical input, identical draw -> identical slots
    torch.testing.assert_close(sample["pixel_values"][1], sample["pixel_values"][3], rtol=0, atol=0)
    # the prior frontal slot is the frontal draw applied at the slot geometry
    generator = torch.Generator().manual_seed(7)
    settings = processor.augmentation_settings
    frontal_draw, lateral_draw = draw_augmentation(settings, generator), draw_augmentation(settings, generator)
    assert frontal_draw != lateral_draw
    small = processor._resize_and_crop(Image.open(same).convert("L"), 256, 224, 224)
    expected = processor._to_tensor(apply_augmentation(small, frontal_draw, settings))
    torch.testing.assert_close(sample["pixel_values"][2], expected, rtol=0, atol=0)
    # slot 0 is the same draw at the 448 geometry: the same picture up to resampling
    assert torch.corrcoef(torch.stack([sample["pixel_values"][0].flatten(), sample["pixel_values"][2].flatten()]))[0, 1] > 0.9


def test_unaugmented_study_uses_the_eval_geometry(realdata_dir):
    processor = AltaImageProcessor()
    sample = _study(processor, realdata_dir, 0, frontal=realdata_dir / NIH_PNG, lateral=realdata_dir / NIH_PNG_2)
    plain = processor.preprocess_study(realdata_dir / NIH_PNG, realdata_dir / NIH_PNG_2, augment=False)
    torch.testing.assert_close(plain["pixel_values"][1], processor(str(realdata_dir / NIH_PNG_2))["pixel_values"][0])
    assert not torch.equal(sample["pixel_values"][1], plain["pixel_values"][1])


def test_unreadable_optional_view_dropped_or_raised(realdata_dir, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    processor = AltaImageProcessor()
    with pytest.raises(RadiographLoadError, match="broken.jpg"):
        processor.preprocess_study(realdata_dir / NIH_PNG, lateral=broken)
    dropped = []
    sample = processor.preprocess_study(realdata_dir / NIH_PNG, lateral=broken, dropped_views=dropped)
    assert sample["view_mask"].tolist() == [1, 0, 0, 0] and len(dropped) == 1 and "empty" in str(dropped[0])
    with pytest.raises(RadiographLoadError):  # the current frontal view is never optional
        processor.preprocess_study(broken, dropped_views=[])


def test_affine_geometry_moves_a_point_as_specified():
    """A single bright pixel moves by the drawn translation and rotates about the centre as stated."""
    settings = AugmentationSettings(brightness=0.0, contrast=0.0)
    pixels = np.zeros((101, 101), np.uint8)
    pixels[50, 80] = 255  # 30 px right of the centre (50.5, 50.5 in pixel-centre coordinates)
    image = Image.fromarray(pixels)
    shift = apply_augmentation(image, _draw(translate_x=0.1), settings)
    assert np.argwhere(np.asarray(shift) == 255).tolist() == [[50, 90]]  # 10 % of 101 px = 10 px to the right
    turned = np.argwhere(np.asarray(apply_augmentation(image, _draw(angle=90.0), settings)) > 0)
    assert turned.mean(axis=0).round().tolist() == [20.0, 50.0]  # counter-clockwise on screen: right -> up


def test_jitter_factors():
    settings = AugmentationSettings()
    image = Image.fromarray(np.full((32, 32), 100, np.uint8))
    brighter = apply_augmentation(image, _draw(brightness=1.2), settings)
    assert np.asarray(brighter).max() == 120
    gradient = Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1)))
    flatter = np.asarray(apply_augmentation(gradient, _draw(contrast=0.8), settings), dtype=float)
    assert flatter.std() == pytest.approx(np.asarray(gradient, dtype=float).std() * 0.8, rel=0.02)


def test_draws_cover_the_configured_ranges():
    settings = AugmentationSettings()
    generator = torch.Generator().manual_seed(0)
    draws = [draw_augmentation(settings, generator) for _ in range(400)]
    angles = [draw.angle for draw in draws]
    assert -20 <= min(angles) < -18 and 18 < max(angles) <= 20
    assert all(0.95 <= draw.scale <= 1.05 and abs(draw.shear) <= 10 and abs(draw.translate_x) <= 0.1 for draw in draws)
    assert all(0.8 <= draw.brightness <= 1.2 and 0.8 <= draw.contrast <= 1.2 for draw in draws)
    assert 150 < sum(draw.brightness_first for draw in draws) < 250


def _draw(angle=0.0, translate_x=0.0, translate_y=0.0, scale=1.0, shear=0.0, brightness=1.0, contrast=1.0):
    from alta_hf.processing import AugmentationDraw

    return AugmentationDraw(angle, translate_x, translate_y, scale, shear, brightness, contrast, brightness_first=True)
