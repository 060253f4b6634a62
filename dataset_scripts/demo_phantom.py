"""Procedural chest-radiograph phantoms for the demo dataset.

A patient is a set of anatomy parameters (`Anatomy`); a study adds a `Finding` (class, severity,
side, lobe) and support devices. `render_frontal` / `render_lateral` turn these into 8-bit grayscale
images. Every shape is an implicit function evaluated on the pixel grid mapped back into the
patient's own coordinates, so the same patient seen with another pose, exposure or finding severity
(a prior study) keeps the same anatomy and lung texture.

Coordinates: image x runs left to right and y top to bottom, both in [-1, 1]. The patient's right
is on the image left (the radiological convention), so the right hemithorax has x < 0. On the
lateral view the patient faces the image left (anterior at x < 0, the spine at x > 0).

Densities: larger = whiter (bone, fluid, soft tissue), smaller = darker (air).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CLASS_NAMES",
    "DEVICE_NAMES",
    "LOBES",
    "SIDES",
    "Anatomy",
    "Finding",
    "cardiothoracic_ratio",
    "render_frontal",
    "render_lateral",
    "sample_anatomy",
]

CLASS_NAMES = ("No Finding", "Cardiomegaly", "Pleural Effusion", "Pneumonia", "Pneumothorax")
SIDES = ("right", "left", "bilateral")
LOBES = ("upper", "middle", "lower")  # "middle" exists only on the right
DEVICE_NAMES = ("ecg_leads", "central_line", "endotracheal_tube", "enteric_tube")

# Cardiothoracic ratios: normal hearts lie in [0.40, 0.48], cardiomegaly runs from 0.53 (mild) to
# 0.70 (severe); the gap keeps the class boundary visible while the severity still varies.
NORMAL_CTR = (0.40, 0.48)
CARDIOMEGALY_CTR = (0.53, 0.70)
_FIELD_EXTENT = 1.5  # the patient's noise fields cover [-extent, extent]^2 of patient coordinates
_FIELD_SIZE = 80


@dataclass(frozen=True)
class Finding:
    """What a study shows. `severity` is 0 when the finding is absent, else in (0, 1]."""

    label: str = "No Finding"
    severity: float = 0.0
    side: str | None = None  # "right" | "left" | "bilateral"; None for no finding and cardiomegaly
    lobe: str | None = None  # "upper" | "middle" | "lower" for pneumonia

    def scaled(self, factor: float) -> "Finding":
        """The same finding at `factor` times the severity; 0 gives this patient's finding-free study."""
        severity = float(self.severity) * float(factor)
        if severity <= 0.0:
            return Finding()
        return Finding(self.label, severity, self.side, self.lobe)


@dataclass(frozen=True)
class Anatomy:
    """One patient's anatomy, shared by all their studies (current and prior)."""

    body_half_width: float
    lung_center_x: float
    lung_center_y: float
    lung_radius_x: float
    lung_radius_y: float
    mediastinum_half_width: float
    dome_top_right: float
    dome_top_left: float
    dome_curvature: float
    heart_center_x: float
    base_ctr: float
    rib_spacing: float
    rib_phase: float
    gastric_bubble: float
    breast_shadow: float
    texture_seed: int

    @property
    def thoracic_width(self) -> float:
        return 2.0 * (self.lung_center_x + self.lung_radius_x)


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draws a patient: habitus, lung/heart/diaphragm geometry, rib pitch, bubble, breasts, texture seed."""
    u = rng.uniform(size=15).tolist()  # Python floats keep the float32 image arithmetic in float32
    lung_center_x = 0.45 + 0.04 * u[0]
    lung_radius_x = 0.30 + 0.05 * u[1]
    dome_top_right = 0.26 + 0.10 * u[6]
    return Anatomy(
        body_half_width=lung_center_x + lung_radius_x + 0.16 + 0.22 * u[2],
        lung_center_x=lung_center_x,
        lung_center_y=0.30 + 0.06 * u[3],
        lung_radius_x=lung_radius_x,
        lung_radius_y=1.00 + 0.08 * u[4],
        mediastinum_half_width=0.085 + 0.03 * u[5],
        dome_top_right=dome_top_right,
        dome_top_left=dome_top_right + 0.02 + 0.06 * u[7],
        dome_curvature=0.9 + 0.5 * u[8],
        heart_center_x=0.05 + 0.05 * u[9],
        base_ctr=NORMAL_CTR[0] + (NORMAL_CTR[1] - NORMAL_CTR[0]) * u[10],
        rib_spacing=0.115 + 0.025 * u[11],
        rib_phase=u[12],
        gastric_bubble=0.05 + 0.05 * u[13] if u[13] > 0.3 else 0.0,
        breast_shadow=0.04 + 0.04 * u[14] if u[14] > 0.55 else 0.0,
        texture_seed=int(rng.integers(2**31)),
    )


def cardiothoracic_ratio(anatomy: Anatomy, finding: Finding) -> float:
    """The heart width over the thoracic width drawn for this study."""
    if finding.label == "Cardiomegaly" and finding.severity > 0:
        low, high = CARDIOMEGALY_CTR
        # a mild prior of a cardiomegaly patient may sit below the class threshold: never below normal
        return max(anatomy.base_ctr, low + (high - low) * float(finding.severity))
    return anatomy.base_ctr


# ---------------------------------------------------------------------------------------------
# small vectorised helpers


def _ramp(margin: np.ndarray, width: float) -> np.ndarray:
    """A soft inside-indicator: 0 for margin <= -width/2, 1 for margin >= width/2, linear between."""
    return np.clip(margin * (1.0 / width) + 0.5, 0.0, 1.0)


def _ellipse_margin(x, y, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse's border, positive inside."""
    q = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return (1.0 - q) * min(rx, ry)


def _segment_distance(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _smooth_field(rng: np.random.Generator, size: int, passes: int) -> np.ndarray:
    """Unit-variance smooth noise: white noise blurred by repeated separable [1, 2, 1] filtering."""
    field = rng.standard_normal((size, size)).astype(np.float32)
    for _ in range(passes):
        field = 0.25 * (np.roll(field, 1, 0) + 2.0 * field + np.roll(field, -1, 0))
        field = 0.25 * (np.roll(field, 1, 1) + 2.0 * field + np.roll(field, -1, 1))
    return field / (field.std() + 1e-6)


def _sample_field(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a field covering [-_FIELD_EXTENT, _FIELD_EXTENT]^2 at patient coordinates."""
    n = field.shape[0]
    scale = (n - 1) / (2.0 * _FIELD_EXTENT)
    fx = np.clip((x + _FIELD_EXTENT) * scale, 0.0, n - 1.001)
    fy = np.clip((y + _FIELD_EXTENT) * scale, 0.0, n - 1.001)
    floor_x, floor_y = np.floor(fx), np.floor(fy)
    wx, wy = fx - floor_x, fy - floor_y
    ix, iy = floor_x.astype(np.intp), floor_y.astype(np.intp)
    top = field[iy, ix] * (1.0 - wx) + field[iy, ix + 1] * wx
    bottom = field[iy + 1, ix] * (1.0 - wx) + field[iy + 1, ix + 1] * wx
    return top * (1.0 - wy) + bottom * wy


@dataclass(frozen=True)
class _Pose:
    """Patient placement: image = shift + scale * rotate(angle) @ patient."""

    scale: float
    angle: float
    shift_x: float
    shift_y: float

    def patient_grid(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        c = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
        u, v = np.meshgrid(c - np.float32(self.shift_x), c - np.float32(self.shift_y))
        cos, sin = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
        inv = np.float32(1.0 / self.scale)
        return (cos * u + sin * v) * inv, (-sin * u + cos * v) * inv

    def to_pixels(self, points: np.ndarray, size: int) -> list[tuple[float, float]]:
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x = self.shift_x + self.scale * (cos * points[:, 0] - sin * points[:, 1])
        y = self.shift_y + self.scale * (sin * points[:, 0] + cos * points[:, 1])
        return list(zip(((x + 1.0) * 0.5 * size).tolist(), ((y + 1.0) * 0.5 * size).tolist()))


def _sample_pose(rng: np.random.Generator, nuisance: bool) -> _Pose:
    u = rng.uniform(size=4).tolist()
    if not nuisance:  # centred, upright, at the mean scale (the draw still happens: the stream stays aligned)
        u = [0.5, 0.5, 0.5, 0.5]
    return _Pose(
        scale=0.86 + 0.16 * u[0],
        angle=np.deg2rad(-5.0 + 10.0 * u[1]),
        shift_x=-0.05 + 0.10 * u[2],
        shift_y=-0.04 + 0.10 * u[3],
    )


# ---------------------------------------------------------------------------------------------
# text markers: a tiny built-in bitmap font, so the pixels never depend on an installed font

_GLYPHS = {
    "A": ("01110", "10001", "10001", "11111", "10001", "10001", "10001"),
    "B": ("11110", "10001", "10001", "11110", "10001", "10001", "11110"),
    "C": ("01111", "10000", "10000", "10000", "10000", "10000", "01111"),
    "E": ("11111", "10000", "10000", "11110", "10000", "10000", "11111"),
    "G": ("01110", "10001", "10000", "10111", "10001", "10001", "01111"),
    "H": ("10001", "10001", "10001", "11111", "10001", "10001", "10001"),
    "I": ("11111", "00100", "00100", "00100", "00100", "00100", "11111"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "R": ("11110", "10001", "10001", "11110", "10100", "10010", "10001"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "U": ("10001", "10001", "10001", "10001", "10001", "10001", "01110"),
}
_MARKER_TEXTS = ("PORTABLE", "UPRIGHT", "AP", "PA", "ERECT")


def _stamp_text(image: np.ndarray, text: str, row: int, col: int, pixel: int, value: float) -> None:
    """Writes `text` into `image` in place with its top-left corner at (row, col); clipped at the border."""
    for index, char in enumerate(text):
        glyph = np.array([[c == "1" for c in line] for line in _GLYPHS[char]])
        block = np.kron(glyph, np.ones((pixel, pixel), dtype=bool))
        r0, c0 = row, col + index * 6 * pixel
        r1, c1 = min(r0 + block.shape[0], image.shape[0]), min(c0 + block.shape[1], image.shape[1])
        if r0 < 0 or c0 < 0 or r1 <= r0 or c1 <= c0:
            continue
        region = image[r0:r1, c0:c1]
        region[block[: r1 - r0, : c1 - c0]] = value


def _draw_markers(image: np.ndarray, rng: np.random.Generator, lateral: bool) -> None:
    """Side letter and technician text: placed at random, never tied to the finding or its side."""
    size = image.shape[0]
    pixel = max(1, size // 128)
    u = rng.uniform(size=6)
    if u[0] < 0.75:
        letter = "L" if (lateral and u[1] < 0.8) or (not lateral and u[1] < 0.5) else "R"
        col = int((0.04 + 0.08 * u[2]) * size) if u[3] < 0.5 else int((0.86 - 0.08 * u[2]) * size)
        _stamp_text(image, letter, int((0.03 + 0.06 * u[4]) * size), col, 2 * pixel, 0.97)
    if u[5] < 0.3:
        text = _MARKER_TEXTS[int(rng.integers(len(_MARKER_TEXTS)))]
        width = len(text) * 6 * pixel
        col = int(rng.uniform(0.02, 0.98) * (size - width))
        row = int((0.88 + 0.07 * rng.uniform()) * size)
        _stamp_text(image, text, row, max(col, 0), pixel, 0.95)


# ---------------------------------------------------------------------------------------------
# frontal view


def _hemithorax_params(x: np.ndarray, right: float, left: float) -> np.ndarray:
    return np.where(x < 0, np.float32(right), np.float32(left))


def _dome(anatomy: Anatomy, x: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Height (y) of the diaphragm under each point; lowest laterally, where the costophrenic angles are."""
    top = _hemithorax_params(x, anatomy.dome_top_right, anatomy.dome_top_left)
    peak = anatomy.lung_center_x - 0.06
    return top + anatomy.dome_curvature * (xs - peak) ** 2 * 0.6


def _side_mask(x: np.ndarray, side: str | None) -> np.ndarray:
    if side == "right":
        return (x < 0).astype(np.float32)
    if side == "left":
        return (x >= 0).astype(np.float32)
    return np.ones_like(x)


def _effusion(anatomy, finding, x, xs, y, soft) -> np.ndarray:
    """Fluid filling the hemithorax base from the costophrenic angle up, with a meniscus rising laterally;
    the left one of a bilateral pair is smaller."""
    lateral = anatomy.lung_center_x + anatomy.lung_radius_x
    medial = anatomy.mediastinum_half_width
    angle_y = _hemithorax_params(x, anatomy.dome_top_right, anatomy.dome_top_left) + (
        0.6 * anatomy.dome_curvature * (lateral - 0.05 - (anatomy.lung_center_x - 0.06)) ** 2)
    level = np.float32((0.10 + 0.45 * finding.severity) * anatomy.lung_radius_y)
    if finding.side == "bilateral":
        level = _hemithorax_params(x, level, level * 0.75)
    rise = np.clip((xs - medial) / (lateral - medial), 0.0, 1.0) ** 2
    top = angle_y - level * (0.55 + 0.45 * rise)
    inside = _ramp(_ellipse_margin(xs, y, anatomy.lung_center_x, anatomy.lung_center_y,
                                   anatomy.lung_radius_x + 0.02, anatomy.lung_radius_y + 0.02), soft)
    return _ramp(y - top, 0.06) * inside * _side_mask(x, finding.side)


def _consolidation(anatomy, finding, x, xs, y, lung, patch_field) -> np.ndarray:
    """Airspace opacity in one lobe: a noisy blob whose extent and density grow with severity."""
    sev = float(finding.severity)
    cy_top = anatomy.lung_center_y - anatomy.lung_radius_y  # apex
    if finding.lobe == "upper":
        center = (anatomy.lung_center_x, cy_top + 0.35)
        fissure = _ramp(cy_top + 0.62 - y, 0.02) if finding.side == "right" else _ramp(cy_top + 0.75 - y, 0.12)
    elif finding.lobe == "middle":
        center = (anatomy.lung_center_x - 0.12, cy_top + 0.85)
        fissure = _ramp(y - (cy_top + 0.62), 0.02) * _ramp(anatomy.lung_center_x + 0.05 - xs, 0.1)
    else:
        center = (anatomy.lung_center_x + 0.05, cy_top + 1.0)
        fissure = _ramp(y - (cy_top + 0.55), 0.15)
    radius = 0.20 + 0.22 * sev
    blob = 1.0 - np.sqrt((xs - center[0]) ** 2 + ((y - center[1]) * 0.8) ** 2) / radius
    texture = _sample_field(patch_field, x, y)
    opacity = _ramp(blob + 0.25 * texture, 0.25)
    return (0.55 + 0.4 * sev) * opacity * fissure * lung * _side_mask(x, finding.side)


def _pneumothorax(anatomy, finding, x, xs, y, soft):
    """The lung retracts towards its medial base; returns (pleural air space, visceral pleural line)."""
    shrink = 1.0 - (0.12 + 0.33 * float(finding.severity))
    anchor_x, anchor_y = anatomy.mediastinum_half_width + 0.05, anatomy.lung_center_y + 0.2
    sx = anchor_x + (xs - anchor_x) / shrink
    sy = anchor_y + (y - anchor_y) / (1.0 - 0.8 * (1.0 - shrink))
    margin = _ellipse_margin(sx, sy, anatomy.lung_center_x, anatomy.lung_center_y,
                             anatomy.lung_radius_x, anatomy.lung_radius_y) * shrink
    side = _side_mask(x, finding.side)
    line = side * np.clip(1.0 - np.abs(margin) / 0.012, 0.0, 1.0)
    return side * (1.0 - _ramp(margin, soft)), line


def _lung_markings(anatomy: Anatomy, field: np.ndarray, x: np.ndarray, xs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vessel-like ridges radiating from the hila: the patient's noise field sampled in polar coordinates
    around each hilum, stretched along the radius so that its zero lines run outwards, fading peripherally."""
    dx = xs - (anatomy.mediastinum_half_width + 0.08)
    dy = y + 0.02
    radius = np.sqrt(dx * dx + dy * dy)
    angle = np.arctan2(dy, dx)
    offset = np.where(x < 0, np.float32(-0.7), np.float32(0.7))
    value = _sample_field(field, angle * 0.42, radius * 0.55 + offset)
    ridges = np.clip(1.0 - np.abs(value) * 2.5, 0.0, 1.0) ** 2
    return ridges * (0.35 + np.exp(-radius * radius * 5.0))


def _frontal_density(anatomy: Anatomy, finding: Finding, x: np.ndarray, y: np.ndarray, soft: float,
                     vessel_field: np.ndarray, patch_field: np.ndarray) -> np.ndarray:
    xs = np.abs(x)
    # body and soft tissue (thicker, hence whiter, towards the midline); rounded shoulders into the neck
    shoulder_y = anatomy.lung_center_y - anatomy.lung_radius_y - 0.05
    over = np.clip((shoulder_y - y) / 0.32, 0.0, 1.0)
    half_width = np.maximum(anatomy.body_half_width * np.sqrt(1.0 - over * over), 0.24)
    body = _ramp(half_width - xs, soft * 2)
    thickness = np.sqrt(np.clip(1.0 - (x / anatomy.body_half_width) ** 2, 0.0, 1.0))
    density = body * (0.24 + 0.22 * thickness)

    # diaphragm, abdomen and gastric bubble
    dome = _dome(anatomy, x, xs)
    abdomen = _ramp(y - dome, soft) * body
    density += 0.11 * abdomen * (1.0 - 0.3 * np.clip(y - dome, 0.0, 1.0))
    if anatomy.gastric_bubble > 0:
        bubble_y = anatomy.dome_top_left + 0.03 + anatomy.gastric_bubble
        bubble = _ramp(_ellipse_margin(x, y, anatomy.lung_center_x - 0.1, bubble_y,
                                       anatomy.gastric_bubble * 1.4, anatomy.gastric_bubble), soft)
        density -= 0.10 * bubble * abdomen

    # lungs: ellipse per hemithorax, cut by the dome below and the mediastinum medially
    lung_margin = _ellipse_margin(xs, y, anatomy.lung_center_x, anatomy.lung_center_y,
                                  anatomy.lung_radius_x, anatomy.lung_radius_y)
    lung = _ramp(lung_margin, soft) * _ramp(dome - y, soft) * _ramp(xs - anatomy.mediastinum_half_width, soft)
    # the lung is thin at its edges, so less air shows there than in its middle
    lung_depth = 0.55 + 0.45 * np.clip(lung_margin * (1.0 / 0.12), 0.0, 1.0)

    # mediastinum, heart (the right border is shorter than the left), aortic knob; below the diaphragm
    # they merge with the abdomen, as the cardiac silhouette does on a radiograph
    ctr = cardiothoracic_ratio(anatomy, finding)
    heart_width = ctr * anatomy.thoracic_width
    heart_rx = np.where(x < anatomy.heart_center_x, np.float32(0.36 * heart_width), np.float32(0.64 * heart_width))
    heart_ry = 0.30 * (1.0 + 0.8 * (ctr - NORMAL_CTR[0]))
    heart_cy = anatomy.dome_top_left - 0.06
    q = np.sqrt(((x - anatomy.heart_center_x) / heart_rx) ** 2 + ((y - heart_cy) / heart_ry) ** 2)
    heart = _ramp((1.0 - q) * heart_ry, soft)
    mediastinum = _ramp(anatomy.mediastinum_half_width + 0.02 * np.clip(y + 0.2, 0, 1) - xs, soft)
    knob = _ramp(_ellipse_margin(x, y, anatomy.mediastinum_half_width + 0.02, -0.30, 0.07, 0.06), soft)
    solid = 1.0 - (1.0 - mediastinum) * (1.0 - heart) * (1.0 - knob)
    density += 0.11 * solid * body * (1.0 - abdomen)
    air = lung * (1.0 - solid)

    # findings that replace air: fluid and consolidation
    if finding.label == "Pleural Effusion" and finding.severity > 0:
        fluid = _effusion(anatomy, finding, x, xs, y, soft)
        air = air * (1.0 - fluid)
        density += 0.05 * fluid * (1.0 - abdomen)
    markings = np.ones_like(x)
    if finding.label == "Pneumonia" and finding.severity > 0:
        opacity = _consolidation(anatomy, finding, x, xs, y, lung, patch_field)
        air = air * (1.0 - opacity)
        markings = 1.0 - 0.6 * opacity
    if finding.label == "Pneumothorax" and finding.severity > 0:
        pleural_air, line = _pneumothorax(anatomy, finding, x, xs, y, soft)
        pleural_air = pleural_air * air
        markings = markings * (1.0 - pleural_air)
        # no lung tissue in the pleural space (darker), a denser collapsed lung, a thin visceral pleural line
        density += -0.08 * pleural_air + 0.05 * line * air
        density += 0.05 * float(finding.severity) * (air - pleural_air) * _side_mask(x, finding.side)
    density -= 0.26 * air * lung_depth
    density += 0.07 * _lung_markings(anatomy, vessel_field, x, xs, y) * air * markings

    # bones: posterior ribs (arcs falling laterally), fainter anterior ribs, spine, clavicles, humeri
    thorax = _ramp(_ellipse_margin(xs, y, anatomy.lung_center_x, anatomy.lung_center_y,
                                   anatomy.lung_radius_x + 0.06, anatomy.lung_radius_y + 0.04), soft * 2)
    phase = (y - 0.75 * (xs - 0.12) ** 2) / anatomy.rib_spacing + anatomy.rib_phase
    posterior = np.clip((np.cos(2.0 * np.pi * phase) - 0.6) / 0.4, 0.0, 1.0)
    phase = (y + 0.45 * (xs - 0.15) ** 2 - 0.3 * xs) / (anatomy.rib_spacing * 1.2) + anatomy.rib_phase * 1.7
    anterior = np.clip((np.cos(2.0 * np.pi * phase) - 0.75) / 0.25, 0.0, 1.0) * _ramp(0.15 - y, 0.3)
    density += (0.05 * posterior + 0.025 * anterior) * thorax * _ramp(dome + 0.05 - y, soft) * (1.0 - 0.7 * solid)
    spine = _ramp(0.055 - xs, soft) * body
    density += spine * (0.03 + 0.012 * np.cos(2.0 * np.pi * y / 0.085))
    clavicle_y = anatomy.lung_center_y - anatomy.lung_radius_y + 0.12
    clavicle = _ramp(0.026 - _segment_distance(xs, y, 0.07, clavicle_y, 0.68, clavicle_y - 0.14), soft)
    density += 0.08 * clavicle
    humerus = _ramp(_ellipse_margin(xs, y, anatomy.body_half_width + 0.02, clavicle_y - 0.08, 0.16, 0.14), soft)
    density += 0.08 * humerus * body
    # trachea: an air column down to the carina
    trachea = _ramp(0.03 - np.abs(x - 0.01), soft) * _ramp(-0.35 - y, soft)
    density -= 0.07 * trachea * body
    if anatomy.breast_shadow > 0:
        breast = _ramp(_ellipse_margin(xs, y, anatomy.lung_center_x + 0.05, anatomy.dome_top_right + 0.16, 0.34, 0.22), 0.12)
        density += anatomy.breast_shadow * breast * body
    return density


def _device_layer(pose: _Pose, size: int, devices: tuple[str, ...], rng: np.random.Generator) -> np.ndarray:
    """Support devices, drawn in patient coordinates so they move with the patient."""
    layer = Image.new("L", (size, size), 0)
    if not devices:
        return np.zeros((size, size), np.float32)
    draw = ImageDraw.Draw(layer)
    width = max(1, round(size / 160))
    if "ecg_leads" in devices:
        for _ in range(int(rng.integers(2, 5))):
            cx, cy = rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.5)
            (px, py), = pose.to_pixels(np.array([[cx, cy]]), size)
            r = 0.022 * size * pose.scale
            draw.ellipse((px - r, py - r, px + r, py + r), outline=230, width=width)
            end = np.array([[cx, cy], [cx + rng.uniform(-0.6, 0.6), cy - 1.0]])
            draw.line(pose.to_pixels(end, size), fill=150, width=width)
    if "central_line" in devices:
        tip = rng.uniform(-0.25, -0.1)
        t = np.linspace(0.0, 1.0, 24)[:, None]
        a, b, c = np.array([-0.45, -1.05]), np.array([-0.12, -0.75]), np.array([-0.05, tip])
        curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t ** 2 * c
        draw.line(pose.to_pixels(curve, size), fill=210, width=width + 1)
    if "endotracheal_tube" in devices:
        tip = rng.uniform(-0.55, -0.42)
        for offset in (-0.018, 0.018):
            line = np.array([[0.01 + offset, -1.1], [0.01 + offset, tip]])
            draw.line(pose.to_pixels(line, size), fill=200, width=width)
    if "enteric_tube" in devices:
        t = np.linspace(0.0, 1.0, 24)[:, None]
        a, b, c = np.array([-0.02, -1.1]), np.array([0.0, 0.2]), np.array([0.3, rng.uniform(0.55, 0.75)])
        curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t ** 2 * c
        draw.line(pose.to_pixels(curve, size), fill=190, width=width + 1)
    return np.asarray(layer, dtype=np.float32) * np.float32(1.0 / 255.0)


def _develop(density: np.ndarray, size: int, rng: np.random.Generator, pose: _Pose,
             devices: tuple[str, ...], lateral: bool, nuisance: bool) -> np.ndarray:
    """Density -> uint8 image with the nuisance of real acquisitions: window/level, gamma and a soft
    exposure gradient (at the render resolution), then at full resolution support devices, quantum
    noise, collimation and text markers. Without `nuisance`: one fixed exposure, the lowest noise, no
    collimation and no markers."""
    low, high, gamma, angle, tilt, noise = rng.uniform(size=6).tolist()
    if not nuisance:
        low, high, gamma, tilt, noise = 0.5, 0.5, 0.5, 0.0, 0.0
    low, high = 0.10 * low, 0.62 + 0.16 * high
    image = np.clip((density - low) * (1.0 / (high - low)), 0.0, 1.0) ** (0.75 + 0.6 * gamma)
    ramp = np.linspace(-1.0, 1.0, image.shape[0], dtype=np.float32)
    angle *= 2.0 * np.pi
    image += (0.06 * tilt) * (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])
    image = _upsample(image, size)
    if devices:
        image += 0.6 * _device_layer(pose, size, devices, rng)
    image += rng.standard_normal((size, size), dtype=np.float32) * np.float32(0.008 + 0.025 * noise)
    if nuisance:
        _collimate(image, rng)
        _draw_markers(image, rng, lateral=lateral)
    return _to_uint8(image)


def _collimate(image: np.ndarray, rng: np.random.Generator) -> None:
    """Sometimes a dark unexposed border, as when the collimator cuts into the detector."""
    if rng.uniform() < 0.25:
        size = image.shape[0]
        widths = (rng.uniform(0.0, 0.05, size=4) * size).astype(int)
        image[: widths[0]] *= 0.15
        image[size - widths[1]:] *= 0.15
        image[:, : widths[2]] *= 0.15
        image[:, size - widths[3]:] *= 0.15


def _internal_size(size: int) -> int:
    """Anatomy is rendered at half resolution and upsampled: its edges are soft anyway, and it makes a
    study four times cheaper. Noise, devices and markers are added at full resolution."""
    return max(32, (size + 1) // 2)


def _upsample(density: np.ndarray, size: int) -> np.ndarray:
    if density.shape[0] == size:
        return density
    return np.array(Image.fromarray(density, mode="F").resize((size, size), Image.BICUBIC))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _patient_field(texture_seed: int, lateral: bool) -> np.ndarray:
    """The patient's lung-texture field; cached because a study's current and prior images share it."""
    field = _smooth_field(np.random.default_rng([texture_seed, int(lateral)]), _FIELD_SIZE, passes=2)
    field.flags.writeable = False
    return field


def render_frontal(anatomy: Anatomy, finding: Finding, rng: np.random.Generator, size: int,
                   devices: tuple[str, ...] = (), nuisance: bool = True) -> np.ndarray:
    """A PA/AP frontal radiograph `[size, size]` uint8. `rng` draws pose, exposure, noise and markers, which vary
    only with `nuisance`."""
    pose = _sample_pose(rng, nuisance)
    x, y = pose.patient_grid(_internal_size(size))
    patch_field = _smooth_field(rng, _FIELD_SIZE // 2, passes=4)
    soft = max(0.012, 3.0 / size)
    density = _frontal_density(anatomy, finding, x, y, soft, _patient_field(anatomy.texture_seed, False), patch_field)
    return _develop(density, size, rng, pose, devices, lateral=False, nuisance=nuisance)


# ---------------------------------------------------------------------------------------------
# lateral view


def render_lateral(anatomy: Anatomy, finding: Finding, rng: np.random.Generator, size: int,
                   nuisance: bool = True) -> np.ndarray:
    """A lateral radiograph `[size, size]` uint8 of the same patient and finding (anterior at the left)."""
    pose = _sample_pose(rng, nuisance)
    x, y = pose.patient_grid(_internal_size(size))
    patch_field = _smooth_field(rng, _FIELD_SIZE // 2, passes=4)
    soft = max(0.012, 3.0 / size)
    sev = float(finding.severity) if finding.label != "No Finding" else 0.0

    depth = 0.78 + 0.6 * (anatomy.body_half_width - anatomy.thoracic_width / 2 - 0.16)  # AP depth follows habitus
    body = _ramp(_ellipse_margin(x, y, 0.0, 0.3, depth, 3.0), soft * 2)
    thickness = np.sqrt(np.clip(1.0 - (x / depth) ** 2, 0.0, 1.0))
    density = body * (0.28 + 0.18 * thickness)

    # diaphragm: lowest at the posterior costophrenic sulcus
    dome = anatomy.dome_top_right + 0.04 + 0.40 * (x + 0.15) ** 2 + 0.12 * np.clip(x, 0.0, None)
    abdomen = _ramp(y - dome, soft) * body
    density += 0.10 * abdomen
    chest_cy = anatomy.lung_center_y - 0.22
    chest_margin = _ellipse_margin(x, y, 0.04, chest_cy, depth - 0.14, 0.80)
    chest = _ramp(chest_margin, soft)
    lung = chest * _ramp(dome - y, soft)
    lung_depth = 0.55 + 0.45 * np.clip(chest_margin * (1.0 / 0.15), 0.0, 1.0)

    # heart: anterior and inferior, resting on the diaphragm; grows backwards and upwards with cardiomegaly
    grow = cardiothoracic_ratio(anatomy, finding) / 0.44
    heart_x = -0.5 * depth + 0.12 * (grow - 1.0)
    heart = _ramp(_ellipse_margin(x, y, heart_x, anatomy.dome_top_right + 0.08, 0.27 * grow, 0.30 * grow ** 0.8), soft * 3)
    spine_x = depth - 0.30
    spine = _ramp(0.10 - np.abs(x - spine_x + 0.05 * y), soft) * body
    vertebrae = np.clip(np.cos(2.0 * np.pi * (y + 0.05 * x) / 0.12) * 2.0 + 1.0, 0.0, 1.0)
    density += spine * (0.05 + 0.025 * vertebrae)
    sternum = _ramp(0.022 - np.abs(x + depth - 0.12 - 0.05 * y), soft) * _ramp(0.25 - y, soft) * _ramp(y + 0.6, soft)
    density += 0.06 * sternum + 0.07 * heart * (1.0 - abdomen) * body
    air = lung * (1.0 - heart) * (1.0 - 0.4 * spine)

    if finding.label == "Pleural Effusion" and sev > 0:
        # fluid collects in the posterior costophrenic sulcus first: a layer over the diaphragm that
        # thickens posteriorly, so its surface is a meniscus rising towards the back
        level = (0.12 + 0.45 * sev) * (1.25 if finding.side == "bilateral" else 1.0)
        rise = np.clip((x + 0.3) / (depth + 0.1), 0.0, 1.0) ** 2
        fluid = _ramp(y - (dome - level * (0.15 + 0.85 * rise)), 0.06) * chest
        air = air * (1.0 - fluid)
    if finding.label == "Pneumonia" and sev > 0:
        centers = {"upper": (0.10, chest_cy - 0.35), "middle": (-0.28, chest_cy + 0.25), "lower": (0.28, chest_cy + 0.40)}
        cx, cy = centers[finding.lobe or "lower"]
        blob = 1.0 - np.hypot(x - cx, y - cy) / (0.17 + 0.17 * sev) + 0.35 * _sample_field(patch_field, x, y)
        air = air * (1.0 - (0.5 + 0.35 * sev) * _ramp(blob, 0.3) * lung)
    density -= 0.22 * air * lung_depth
    vessels = np.clip(1.0 - np.abs(_sample_field(_patient_field(anatomy.texture_seed, True), x, y)) * 2.5, 0.0, 1.0) ** 2
    density += 0.04 * vessels * air
    trachea = _ramp(0.035 - _segment_distance(x, y, -0.05, -1.3, 0.08, chest_cy - 0.15), soft)
    density -= 0.07 * trachea * body
    # the raised arms cross the upper chest
    arm = _ramp(0.09 - _segment_distance(x, y, -1.0, -0.95, 0.35, -0.62), soft * 4)
    density += 0.07 * arm * body

    return _develop(density, size, rng, pose, (), lateral=True, nuisance=nuisance)
