"""Interpretability pictures (evaluation.pictures) of a tiny ALTA model on real radiographs from tests/fixtures/realdata/:
word <-> region attention maps and their PNGs, MRM reconstruction panels, and the command line."""

import numpy as np
import pytest
import torch
from PIL import Image

from alta_hf.evaluation.pictures import (
    MASKED_PATCH_COLOR,
    PictureError,
    crop_box,
    load_pretraining_model,
    main,
    reconstruct,
    reconstruction_panel_boxes,
    render_attention,
    render_reconstruction,
    save_attention_pictures,
    save_reconstruction_picture,
    word_attention,
)
from alta_hf.modeling_alta.losses_alta import patchify, word_region_attention
from alta_hf.processing import load_radiograph
from tests.factories import save_tiny_alta_folder

JPEG = "derived/rg1_mimic_cxr_jpg_style.jpg"  # 1841 x 1955: not square
PNG = "images/nih_cxr14/00000001_000.png"
DICOM = "dicom/nema_wg04_RG1_UNCR_cr_chest_pa.dcm"
# "blunting", "costophrenic" and "angle" are several word pieces in the tiny vocabulary, the other words one each
REPORT = "Moderate cardiomegaly with blunting of the left costophrenic angle. No pneumothorax."


@pytest.fixture(scope="module")
def folder(tmp_path_factory, golden_dir):
    """A saved tiny AltaForPreTraining with the golden tokenizer and a written processor."""
    return save_tiny_alta_folder(tmp_path_factory.mktemp("pictures") / "alta-tiny", golden_dir / "BiomedVLP-CXR-BERT-specialized")


@pytest.fixture(scope="module")
def loaded(folder):
    return load_pretraining_model(folder, need_decoder=True)


@pytest.fixture(scope="module")
def attention(loaded, realdata_dir):
    model, processor = loaded
    return word_attention(model, processor, realdata_dir / JPEG, REPORT)


def _assert_png_with_aspect(path, width, height):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        picture.load()
        assert abs(picture.width * height / width - picture.height) <= 1, (picture.size, (width, height))


# ----- attention --------------------------------------------------------------------------------------------------


def test_words_and_maps(attention, loaded, realdata_dir):
    assert attention.words == ["Moderate", "cardiomegaly", "with", "blunting", "of", "the", "left", "costophrenic",
                               "angle", ".", "No", "pneumothorax", "."]
    assert [REPORT[a:b] for a, b in attention.spans] == attention.words
    model, processor = loaded
    vision = model.config.vision_config
    grid = vision.image_size // vision.patch_size
    assert attention.maps.shape == (13, grid, grid)
    assert np.allclose(attention.maps.sum(axis=(1, 2)), 1, atol=1e-5)
    # the map of a one-piece word is its row of the local loss's attention, the map of "blunting" the mean of its
    # six pieces' rows (tokens 4..9 after [CLS] -> rows 3..8); "costophrenic" is eleven pieces (rows 12..22), "angle" four (23..26)
    inputs = processor(images=load_radiograph(realdata_dir / JPEG), text=REPORT, padding="longest")
    with torch.no_grad():
        rows = word_region_attention(
            model.alta.get_image_local_features(inputs["pixel_values"]),
            model.alta.get_text_local_features(inputs["input_ids"], inputs["attention_mask"]),
            model.alta.local_logit_scales.exp()[0], inputs["attention_mask"][:, 1:],
        )[0].reshape(-1, grid, grid).numpy()
    assert np.allclose(attention.word_map("cardiomegaly"), rows[1], atol=1e-6)
    assert np.allclose(attention.word_map("blunting"), rows[3:9].mean(0), atol=1e-6)
    assert np.allclose(attention.word_map("costophrenic"), rows[12:23].mean(0), atol=1e-6)
    assert np.allclose(attention.word_map("angle"), rows[23:27].mean(0), atol=1e-6)
    assert np.allclose(attention.word_map("pneumothorax"), rows[29], atol=1e-6)


def test_attention_changes_with_the_word(attention):
    first, second = attention.word_map("cardiomegaly"), attention.word_map("pneumothorax")
    assert np.abs(first - second).max() > 1e-3
    assert not np.allclose(attention.word_map("left"), attention.word_map("angle"))
    # lookup is case-insensitive; an index gives the same map
    assert np.array_equal(attention.word_map("CARDIOMEGALY"), attention.maps[1])


def test_phrase_is_the_mean_of_its_words(attention):
    phrase = attention.phrase_map("left  Costophrenic angle")
    expected = np.mean([attention.word_map(w) for w in ("left", "costophrenic", "angle")], axis=0)
    assert np.allclose(phrase, expected, atol=1e-7)
    assert attention.phrase_indices("No pneumothorax.") == [10, 11, 12]
    with pytest.raises(PictureError, match="'left costo'"):
        attention.phrase_indices("left costo")  # ends inside a word
    with pytest.raises(PictureError, match="'pleural effusion'"):
        attention.phrase_map("pleural effusion")
    with pytest.raises(PictureError, match="'effusion'"):
        attention.word_map("effusion")


def test_crop_box_is_what_the_model_sees(attention, loaded):
    model, processor = loaded
    box = crop_box(attention.image.size, processor.image_processor)
    # shorter side 1841 -> 256, crop 224: a centred box of about 1611 x 1616
    assert box[2] - box[0] == pytest.approx(1841 * 224 / 256, abs=1)
    # the processor truncates the longer side (271.85 -> 271 px), so the box is a touch taller than wide
    assert box[3] - box[1] == pytest.approx(224 * 1955 / int(256 * 1955 / 1841), abs=1e-6)
    # centred up to the rounding of the crop offset (half a resized pixel, 3.6 original pixels here)
    assert (box[0] + box[2]) / 2 == pytest.approx(1841 / 2, abs=1) and (box[1] + box[3]) / 2 == pytest.approx(1955 / 2, abs=4)
    # cutting the box out and resizing it to the model input gives (up to resampling) the processed image
    direct = processor.image_processor(attention.image)["pixel_values"][0, 0].numpy()
    side = processor.image_processor.crop_size.height
    crop = attention.image.crop(tuple(round(v) for v in box)).resize((side, side), Image.Resampling.BICUBIC)
    # (the correlation ignores the processor's affine normalisation)
    assert np.corrcoef(direct.ravel(), np.asarray(crop, dtype=np.float32).ravel())[0, 1] > 0.999  # one resized pixel off: 0.985


def test_render_colours_only_the_crop(attention):
    picture = np.asarray(render_attention(attention.image, attention.word_map("left"), attention.crop_box, max_side=400))
    assert picture.shape[:2] == (400, round(1841 * 400 / 1955))
    scale = 400 / 1955
    left, top, right, bottom = (round(v * scale) for v in attention.crop_box)
    gray = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2])
    assert gray[:, : left - 1].all() and gray[:, right + 1 :].all() and gray[bottom + 1 :].all()
    assert not gray[top + 2 : bottom - 2, left + 2 : right - 2].any()
    # the hottest patch of the map is the reddest place in the crop
    hot_row, hot_col = np.unravel_index(attention.word_map("left").argmax(), attention.maps.shape[1:])
    patch = (right - left) / attention.maps.shape[2]
    redness = picture[..., 0].astype(int) - picture[..., 2].astype(int)
    y, x = np.unravel_index(redness[top:bottom, left:right].argmax(), (bottom - top, right - left))
    assert abs(y // patch - hot_row) <= 1 and abs(x // patch - hot_col) <= 1


def test_attention_pictures_are_pngs_with_the_image_aspect(loaded, realdata_dir, tmp_path):
    model, processor = loaded
    paths = save_attention_pictures(model, processor, realdata_dir / JPEG, REPORT, tmp_path / "words")
    # one picture per word with a letter: the two full stops are skipped
    assert len(paths) == 11 and paths[1].name == "attention_001_cardiomegaly.png"
    for path in paths:
        _assert_png_with_aspect(path, 1841, 1955)
    (phrase,) = save_attention_pictures(model, processor, realdata_dir / PNG, REPORT, tmp_path, phrase="left costophrenic angle")
    assert phrase.name == "attention_phrase_left-costophrenic-angle.png"
    _assert_png_with_aspect(phrase, 512, 512)
    with pytest.raises(PictureError, match="either words or a phrase"):
        save_attention_pictures(model, processor, realdata_dir / PNG, REPORT, tmp_path, words=["left"], phrase="left")


# ----- reconstruction ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reconstruction(loaded, realdata_dir):
    model, processor = loaded
    return reconstruct(model, processor, realdata_dir / JPEG, seed=3)


def test_reconstruction_is_the_models_own(reconstruction, loaded, realdata_dir):
    model, processor = loaded
    config = model.config
    # the same image, mask noise and decoder through AltaForPreTraining.forward (slot 0 carries the seeded noise)
    sample = processor.preprocess_study(load_radiograph(realdata_dir / JPEG), report=REPORT, augment=False,
                                        generator=torch.Generator().manual_seed(0))
    batch = {key: value[None] for key, value in sample.items()}
    noise = torch.rand((1, config.num_view_slots, config.num_patches))
    noise[0, 0] = torch.rand((1, 1, config.num_patches), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        output = model(**batch, noise=noise)
    grid = config.reconstruction_image_size // config.reconstruction_patch_size
    assert np.array_equal(reconstruction.mask, output.mask[0].reshape(grid, grid).bool().numpy())
    assert reconstruction.mask.mean() == config.vision_config.mask_ratio
    assert torch.allclose(reconstruction.predicted_patches, output.reconstruction_logits[0], atol=1e-5)
    assert torch.equal(reconstruction.target_pixel_values, sample["target_pixel_values"])
    # norm-pix undone with the target patches' statistics: normalising again gives the decoder output back
    rebuilt = patchify(reconstruction.reconstructed_pixel_values[None], config.reconstruction_patch_size)[0]
    target = patchify(reconstruction.target_pixel_values[None], config.reconstruction_patch_size)[0]
    renormalised = (rebuilt - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(renormalised, reconstruction.predicted_patches, atol=1e-4)


def test_reconstruction_panels(reconstruction, loaded, realdata_dir, tmp_path):
    picture = np.asarray(render_reconstruction(reconstruction))
    size, patch = reconstruction.target_pixel_values.shape[-1], reconstruction.patch_size
    boxes = reconstruction_panel_boxes(size)
    assert len(boxes) == 3 and picture.shape[:2] == (boxes[0][3], boxes[2][2])
    original, masked, rebuilt = (picture[top:bottom, left:right] for left, top, right, bottom in boxes)
    expected_original = reconstruction.to_display(reconstruction.target_pixel_values)
    assert np.array_equal(original[..., 0], expected_original)
    removed = np.argwhere(reconstruction.mask)
    kept = np.argwhere(~reconstruction.mask)
    for (row, col), blank in ((removed[0], True), (removed[-1], True), (kept[0], False)):
        cell = (slice(row * patch, (row + 1) * patch), slice(col * patch, (col + 1) * patch))
        if blank:
            assert (masked[cell] == MASKED_PATCH_COLOR).all()
            prediction = reconstruction.to_display(reconstruction.reconstructed_pixel_values)
            assert np.array_equal(rebuilt[cell][..., 0], prediction[cell])
        else:
            assert np.array_equal(masked[cell], original[cell]) and np.array_equal(rebuilt[cell], original[cell])
            assert (masked[cell] != MASKED_PATCH_COLOR).any()
    # blanked pixels are exactly the removed patches
    blank = (masked == MASKED_PATCH_COLOR).all(-1)
    assert np.array_equal(blank, reconstruction.pixel_mask())


def test_reconstruction_is_deterministic_under_a_seed(loaded, realdata_dir, tmp_path, reconstruction):
    model, processor = loaded
    first = save_reconstruction_picture(model, processor, realdata_dir / JPEG, tmp_path / "a", seed=3)
    second = save_reconstruction_picture(model, processor, realdata_dir / JPEG, tmp_path / "b", seed=3)
    assert first.name == "reconstruction_seed3.png" and first.read_bytes() == second.read_bytes()
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(render_reconstruction(reconstruction)))
    other = reconstruct(model, processor, realdata_dir / JPEG, seed=4)
    assert not np.array_equal(other.mask, reconstruction.mask)


def test_reconstruction_needs_the_decoder(loaded, tmp_path, golden_dir, realdata_dir):
    model, processor = loaded
    with pytest.raises(PictureError, match="no reconstruction decoder"):
        reconstruct(model.alta, processor, realdata_dir / PNG)
    # an inference-only folder has no decoder weights: the command line says so instead of drawing random output
    model.alta.save_pretrained(tmp_path / "inference")
    processor.save_pretrained(tmp_path / "inference")
    with pytest.raises(PictureError, match="no reconstruction decoder weights"):
        load_pretraining_model(tmp_path / "inference", need_decoder=True)


# ----- command line -----------------------------------------------------------------------------------------------


def test_cli_end_to_end(folder, realdata_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["attention", "--model", str(folder), "--image", str(realdata_dir / DICOM), "--report", REPORT,
                 "--words", "cardiomegaly", "pneumothorax", "--output-dir", str(out), "--max-side", "300"]) == 0
    written = sorted(out.glob("*.png"))
    assert [p.name for p in written] == ["attention_001_cardiomegaly.png", "attention_011_pneumothorax.png"]
    assert capsys.readouterr().out.split() == [str(path) for path in written]
    dicom = load_radiograph(realdata_dir / DICOM)
    for path in written:
        _assert_png_with_aspect(path, dicom.width, dicom.height)
    assert not np.array_equal(np.asarray(Image.open(written[0])), np.asarray(Image.open(written[1])))
    assert main(["attention", "--model", str(folder), "--image", str(realdata_dir / PNG), "--report", REPORT,
                 "--phrase", "costophrenic angle", "--output-dir", str(out)]) == 0
    assert (out / "attention_phrase_costophrenic-angle.png").is_file()
    assert main(["reconstruction", "--model", str(folder), "--image", str(realdata_dir / PNG), "--seed", "1",
                 "--output-dir", str(out)]) == 0
    with Image.open(out / "reconstruction_seed1.png") as picture:
        assert picture.format == "PNG" and picture.size == (3 * 448 + 2 * 8, 448 + 24)


def test_cli_reports_bad_inputs(folder, tmp_path, capsys):
    missing = tmp_path / "no_such_radiograph.png"
    assert main(["attention", "--model", str(folder), "--image", str(missing), "--report", REPORT,
                 "--output-dir", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error:") and str(missing) in error
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["reconstruction", "--model", str(folder), "--image", str(broken), "--output-dir", str(tmp_path)]) == 1
    assert str(broken) in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):  # argparse: --words and --phrase exclude each other
        main(["attention", "--model", str(folder), "--image", str(broken), "--report", REPORT, "--words", "a",
              "--phrase", "b", "--output-dir", str(tmp_path)])
