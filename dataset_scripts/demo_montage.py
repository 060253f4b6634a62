"""A montage of demo radiographs, one row per class: the same finding at mild, moderate and severe
grade, the prior study of the severe case (finding smaller or absent) and its lateral view.

    python -m alta_hf.dataset_scripts.demo_montage docs/images/demo_montage.png [--tile 112] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from PIL import Image, ImageDraw

from .demo_phantom import CLASS_NAMES, Finding, render_frontal, render_lateral, sample_anatomy

__all__ = ["COLUMNS", "render_montage"]

COLUMNS = ("mild", "moderate", "severe", "prior of severe", "lateral of severe")
_EXAMPLES = {  # side and lobe of each row's finding
    "No Finding": (None, None),
    "Cardiomegaly": (None, None),
    "Pleural Effusion": ("right", None),
    "Pneumonia": ("right", "lower"),
    "Pneumothorax": ("left", None),
}
_LABEL_WIDTH = 120
_HEADER_HEIGHT = 18


def render_montage(tile: int = 112, seed: int = 0) -> Image.Image:
    """Renders at 256x256 (the demo default) and shrinks each image to `tile` pixels."""
    rows = []
    for row_index, label in enumerate(CLASS_NAMES):
        side, lobe = _EXAMPLES[label]
        tiles = []
        for column, severity in enumerate((0.2, 0.5, 0.9)):
            rng = np.random.default_rng([seed, row_index, column])
            anatomy = sample_anatomy(rng)
            finding = Finding(label, severity, side, lobe) if label != "No Finding" else Finding()
            tiles.append(render_frontal(anatomy, finding, rng, 256))
        tiles.append(render_frontal(anatomy, finding.scaled(0.4), rng, 256))
        tiles.append(render_lateral(anatomy, finding, rng, 256))
        rows.append([Image.fromarray(t).resize((tile, tile), Image.BOX) for t in tiles])

    width = _LABEL_WIDTH + tile * len(COLUMNS)
    canvas = Image.new("L", (width, _HEADER_HEIGHT + tile * len(rows)), 255)
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(COLUMNS):
        draw.text((_LABEL_WIDTH + column * tile + 4, 3), title, fill=0)
    for row_index, (label, tiles) in enumerate(zip(CLASS_NAMES, rows)):
        top = _HEADER_HEIGHT + row_index * tile
        side, lobe = _EXAMPLES[label]
        caption = label if side is None else f"{label}\n({side}{' ' + lobe if lobe else ''})"
        draw.multiline_text((4, top + tile // 2 - 12), caption, fill=0)
        for column, image in enumerate(tiles):
            canvas.paste(image, (_LABEL_WIDTH + column * tile, top))
    return canvas


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alta_hf.dataset_scripts.demo_montage", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--tile", type=int, default=112, help="side of each image in the montage")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    render_montage(args.tile, args.seed).save(args.output, optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
