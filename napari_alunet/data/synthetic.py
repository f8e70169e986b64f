"""Deterministic synthetic day-5 blastocyst images with exact 5-class ground truth.

No real data can be shipped, so every test, the sample data and the oracle-replay experiments
draw pools from here. The generator is built to match the measured statistics of real images
(the real-image figures and the comparison table are in ``sample_data/README.md``): classes
differ little in mean brightness but a lot in texture, the zona is a smooth ring of near-uniform
width, the trophectoderm a thin layer of flattened cells, the inner cell mass one compact
cluster pressed against it, and modulation-contrast relief, uneven illumination, blur and noise
sit on top. Gardner stages and grades are drawn with realistic, unequal frequencies so that a
pool holds many easy images and a few hard ones.

Label indices: 0 background, 1 ICM, 2 TE, 3 ZP, 4 BL. The blastocoel is exactly what an
importer derives from the three binary masks of the public layout::

    BL == binary_fill_holes(ZP) & ~ZP & ~ICM & ~TE

(the zona ring is therefore always closed in the mask: where a hatching embryo breaks through,
a thin thread of zona is kept, and the frame never cuts through the ring).

Lengths in :class:`BlastocystParams` are in *reference pixels* (a full-size, 377-pixel-high
image); they are multiplied by ``scale = min(h, w) / 377`` so any image size, down to 32 x 32,
shows the same embryo with all five classes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_alunet.data import _synthetic_texture as tx

#: Bump whenever the images or labels produced for a given seed change.
GENERATOR_VERSION = "1.1.0"

#: Mean and std of real image sizes (h, w) and the reference height lengths are given in.
REAL_SHAPE_MEAN = (377.0, 447.0)
REAL_SHAPE_STD = (19.0, 8.0)
REFERENCE_SIZE = 377.0

BACKGROUND, ICM, TE, ZP, BL = tx.BACKGROUND, tx.ICM, tx.TE, tx.ZP, tx.BL

#: Gardner expansion stages: name, frequency, outer zona radius, zona / TE thickness,
#: perivitelline gap and ICM radius (reference pixels).
STAGES: dict[int, dict[str, Any]] = {
    1: {"name": "early", "p": 0.05, "r": 170.0, "zp": 40.0, "te": 36.0, "pvs": 8.0, "icm": 90.0},
    2: {"name": "blastocyst", "p": 0.12, "r": 175.0, "zp": 38.0, "te": 33.0, "pvs": 3.0,
        "icm": 92.0},
    3: {"name": "full", "p": 0.34, "r": 179.0, "zp": 36.0, "te": 32.0, "pvs": 0.0, "icm": 93.0},
    4: {"name": "expanded", "p": 0.36, "r": 186.0, "zp": 30.0, "te": 30.0, "pvs": 0.0, "icm": 93.0},
    5: {"name": "hatching", "p": 0.08, "r": 183.0, "zp": 26.0, "te": 30.0, "pvs": 0.0, "icm": 90.0},
    6: {"name": "hatched", "p": 0.05, "r": 135.0, "zp": 16.0, "te": 0.0, "pvs": 0.0, "icm": 70.0},
}
#: Grade -> (frequency, ICM cell size, ICM texture contrast, TE cell width, TE contrast).
GRADES: dict[str, tuple[float, float, float, float, float]] = {
    "A": (0.30, 17.0, 1.0, 55.0, 1.0),
    "B": (0.50, 23.0, 0.8, 72.0, 0.9),
    "C": (0.20, 33.0, 0.5, 105.0, 0.75),
}
COLLAPSE_P = 0.07  # of stages 2-4


@dataclass
class BlastocystParams:
    """The drawn modes of one synthetic image (lengths in reference pixels, angles in radians).

    Attributes
    ----------
    shape : image (h, w).
    stage, stage_name : Gardner expansion stage 1-6 and its name.
    icm_grade, te_grade : Gardner grades ``"A"``-``"C"``.
    collapsed : cavity shrunk, TE detached from the zona and folded.
    centre : (dy, dx) offset of the embryo from the image centre.
    radii, rotation : outer zona ellipse semi-axes (ry, rx) and its rotation.
    outline : ``(amplitude, phase)`` of harmonics 2, 3, ... of the outer zona radius.
    zp_thickness, te_thickness, pvs : zona, TE-layer and perivitelline-gap widths.
    zp_variation : (relative amplitude, phase) of the first-harmonic zona width change.
    fold : harmonics 2, ... of the perivitelline gap (folding of a collapsed embryo).
    te_cell_width, te_contrast : TE cell width along the layer and texture strength.
    icm_angle, icm_radius, icm_aspect, icm_outline : ICM cluster position, size, tangential /
        radial axis ratio and outline harmonics.
    icm_cell, icm_contrast : ICM cell size and texture strength.
    breach_angle, breach_width, bulge : hatching gap position, half-width and bulge height
        (``breach_width`` 0: intact zona).
    neighbour_angle : direction of a neighbouring embryo at the frame edge, or None.
    n_debris : debris particles in the medium.
    n_fragments : cell fragments in the medium (round, cell-like, labelled background).
    illumination : (ramp amplitude, ramp angle, vignetting).
    relief : (modulation-contrast strength, shading angle).
    blur, noise, gain, offset : focus blur (reference px), noise std, contrast and brightness.
    """

    shape: tuple[int, int]
    stage: int
    stage_name: str
    icm_grade: str
    te_grade: str
    collapsed: bool
    centre: tuple[float, float]
    radii: tuple[float, float]
    rotation: float
    outline: list[tuple[float, float]]
    zp_thickness: float
    zp_variation: tuple[float, float]
    te_thickness: float
    pvs: float
    fold: list[tuple[float, float]]
    te_cell_width: float
    te_contrast: float
    icm_angle: float
    icm_radius: float
    icm_aspect: float
    icm_outline: list[tuple[float, float]]
    icm_cell: float
    icm_contrast: float
    breach_angle: float = 0.0
    breach_width: float = 0.0
    bulge: float = 0.0
    neighbour_angle: float | None = None
    n_debris: int = 0
    n_fragments: int = 0
    illumination: tuple[float, float, float] = (0.0, 0.0, 0.0)
    relief: tuple[float, float] = (1.0, 0.8)
    blur: float = 1.0
    noise: float = 3.0
    gain: float = 1.0
    offset: float = 0.0

    @property
    def scale(self) -> float:
        """Image pixels per reference pixel."""
        return min(self.shape) / REFERENCE_SIZE

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain floats, ints, strings and lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=float))


def _harmonics(rng: np.random.Generator, n: int, amp: float) -> list[tuple[float, float]]:
    return [(float(rng.normal(0, amp / k)), float(rng.uniform(0, 2 * np.pi)))
            for k in range(1, n + 1)]


def _grade(rng: np.random.Generator) -> str:
    return str(rng.choice(list(GRADES), p=[g[0] for g in GRADES.values()]))


def draw_params(
    rng: np.random.Generator, shape: tuple[int, int] | None = None, *, stage: int | None = None,
    collapsed: bool | None = None,
) -> BlastocystParams:
    """Draw the modes of one image: stage, grades, geometry, optics.

    Parameters
    ----------
    rng : random generator (advanced by the draw).
    shape : image (h, w); None draws it like the real data (377 +- 19 x 447 +- 8).
    stage, collapsed : force a Gardner stage (1-6) / a collapsed embryo (stages 2-4 only)
        instead of drawing them; the rest is drawn for that stage.

    Returns
    -------
    BlastocystParams
    """
    if shape is None:
        h = int(np.clip(np.rint(rng.normal(REAL_SHAPE_MEAN[0], REAL_SHAPE_STD[0])), 330, 430))
        w = int(np.clip(np.rint(rng.normal(REAL_SHAPE_MEAN[1], REAL_SHAPE_STD[1])), 425, 470))
        shape = (h, w)
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 16:
        raise ValueError(f"shape {shape} is too small: both sides must be >= 16 pixels")
    drawn = int(rng.choice(list(STAGES), p=[s["p"] for s in STAGES.values()]))
    stage = drawn if stage is None else int(stage)
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {list(STAGES)}, not {stage}")
    st = STAGES[stage]
    icm_grade, te_grade = _grade(rng), _grade(rng)
    gi, gt = GRADES[icm_grade], GRADES[te_grade]
    drawn_collapse = bool(rng.random() < COLLAPSE_P)
    collapsed = bool(stage in (2, 3, 4) and (drawn_collapse if collapsed is None else collapsed))
    R = st["r"] * rng.normal(1.0, 0.03)
    aspect = rng.uniform(0.86, 1.0)
    ry, rx = R * np.sqrt(aspect), R / np.sqrt(aspect)
    pvs = st["pvs"] * rng.uniform(0.5, 1.5)
    if collapsed:
        pvs = R * rng.uniform(0.15, 0.28)
    breach_angle, breach_width, bulge = float(rng.uniform(-np.pi, np.pi)), 0.0, 0.0
    if stage == 5:
        breach_width, bulge = rng.uniform(0.25, 0.45), R * rng.uniform(0.12, 0.35)
    elif stage == 6:
        breach_width, bulge = rng.uniform(0.5, 0.65), R * rng.uniform(0.65, 0.8)
    off_centre = rng.random() < 0.2
    sd = (30.0, 60.0) if off_centre else (10.0, 22.0)
    centre = (rng.normal(0, sd[0]), rng.normal(0, sd[1]))
    if stage == 6:  # make room for the hatched embryo beside the empty zona
        centre = (-0.55 * R * np.sin(breach_angle), -0.55 * R * np.cos(breach_angle))
    p = BlastocystParams(
        shape=shape, stage=stage, stage_name=st["name"], icm_grade=icm_grade, te_grade=te_grade,
        collapsed=collapsed, centre=(float(centre[0]), float(centre[1])),
        radii=(float(ry), float(rx)), rotation=float(rng.uniform(0, np.pi)),
        outline=_harmonics(rng, 4, 0.035)[1:],
        zp_thickness=float(st["zp"] * rng.normal(1.0, 0.06)),
        zp_variation=(float(rng.uniform(0, 0.12)), float(rng.uniform(0, 2 * np.pi))),
        te_thickness=float(st["te"] * rng.normal(1.0, 0.08)), pvs=float(pvs),
        fold=_harmonics(rng, 5, 0.35 if collapsed else 0.3)[1:],
        te_cell_width=float(gt[3] * rng.normal(1.0, 0.1)),
        te_contrast=float(gt[4] * rng.normal(1.0, 0.08)),
        icm_angle=float(rng.uniform(-np.pi, np.pi)),
        icm_radius=float(st["icm"] * rng.normal(1.0, 0.08) * (0.85 if icm_grade == "C" else 1.0)),
        icm_aspect=float(rng.uniform(1.2, 1.6)), icm_outline=_harmonics(rng, 4, 0.12)[1:],
        icm_cell=float(gi[1] * rng.normal(1.0, 0.1)),
        icm_contrast=float(gi[2] * rng.normal(1.0, 0.08)),
        breach_angle=breach_angle, breach_width=float(breach_width), bulge=float(bulge),
        neighbour_angle=float(rng.uniform(-np.pi, np.pi)) if rng.random() < 0.2 else None,
        n_debris=int(rng.poisson(4)), n_fragments=int(rng.poisson(1.2)),
        illumination=(float(rng.uniform(0.03, 0.14)), float(rng.uniform(0, 2 * np.pi)),
                      float(rng.uniform(0.0, 0.12))),
        relief=(float(rng.uniform(1.4, 2.4)), float(rng.normal(np.pi / 4, 0.3))),
        blur=float(np.clip(rng.lognormal(np.log(0.75), 0.3), 0.4, 2.0)),
        noise=float(rng.uniform(3.5, 5.5)),
        gain=float(rng.normal(1.0, 0.07)), offset=float(rng.normal(0.0, 4.0)),
    )
    tx.fit_in_frame(p)
    return p


def _layout(p: BlastocystParams, rng: np.random.Generator) -> dict[str, Any]:
    """Label map and the geometric fields the renderer needs (image pixels)."""
    h, w = p.shape
    s = p.scale
    cy, cx = (h - 1) / 2 + p.centre[0] * s, (w - 1) / 2 + p.centre[1] * s
    yy, xx = np.arange(h, dtype=float)[:, None] - cy, np.arange(w, dtype=float)[None, :] - cx
    r, th = np.hypot(yy, xx), np.arctan2(yy, xx)
    r_mid = (np.mean(p.radii) - p.zp_thickness - p.pvs - p.te_thickness / 2) * s
    n_te = max(4, round(2 * np.pi * r_mid / max(p.te_cell_width * s, 1.0)))
    warp = _harmonics(rng, 4, 0.6 * np.pi / n_te)

    def rings(theta: np.ndarray) -> dict[str, np.ndarray]:
        ro, tz = tx.outer_radius(p, theta) * s, tx.zona_width(p, theta) * s
        pv = p.pvs * s * np.clip(1 + tx.fourier(theta, p.fold), 0.15, None)
        te_out = tz + pv * (1 - tx.breach_window(p, theta))
        u0 = n_te * (theta + tx.fourier(theta, warp, first=1)) / (2 * np.pi)
        tt = p.te_thickness * s * (0.84 + 0.25 * np.sin(np.pi * (u0 % 1.0)))
        return {"ro": ro, "tz": tz, "te_out": te_out, "te_in": te_out + tt, "u0": u0}

    g = rings(th)
    d = g["ro"] - r
    lab = np.zeros((h, w), dtype=np.uint8)
    lab[d >= 0] = BL
    lab[(d >= 0) & (d < g["tz"])] = ZP
    lab[(d >= g["te_out"]) & (d < g["te_in"])] = TE
    bulge = np.zeros((h, w), dtype=bool)
    if p.bulge > 0:
        rel = tx.angle_diff(th, p.breach_angle) / (0.8 * p.breach_width)
        bulge = (d < 0) & (-d < p.bulge * s * np.sqrt(np.clip(1 - rel**2, 0, None)))
        lab[bulge] = TE
    # the ICM: an irregular ellipse pressed against the TE, cut by the TE's inner boundary
    phi = p.icm_angle
    a_r, a_t = p.icm_radius * s / np.sqrt(p.icm_aspect), p.icm_radius * s * np.sqrt(p.icm_aspect)
    g_phi = rings(np.array([phi]))
    if p.stage == 6:  # hatched: the cell mass lies outside, in the bulge
        phi = p.breach_angle
        a_r, a_t = min(a_r, 0.3 * p.bulge * s), min(a_t, 0.45 * p.bulge * s)
        dist = float(tx.outer_radius(p, np.array([phi]))[0] * s + 0.55 * p.bulge * s)
        allowed = bulge
    else:
        dist = float((g_phi["ro"] - g_phi["te_in"])[0] - 0.45 * a_r)
        allowed = d >= g["te_in"]
    qy, qx = yy - dist * np.sin(phi), xx - dist * np.cos(phi)
    q_r, q_t = qy * np.sin(phi) + qx * np.cos(phi), qx * np.sin(phi) - qy * np.cos(phi)
    rho = np.hypot(q_r / a_r, q_t / a_t) / (1 + tx.fourier(np.arctan2(q_t, q_r), p.icm_outline))
    icm = (rho < 1) & allowed
    comp, n_comp = ndi.label(icm)
    if n_comp > 1:
        icm = comp == 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
    lab[icm] = ICM
    # the blastocoel is exactly what an importer derives from the binary masks
    zp = lab == ZP
    fill = ndi.binary_fill_holes(zp)
    bl = fill & ~zp & (lab != ICM) & (lab != TE)
    lab[(lab == BL) & ~bl] = BACKGROUND
    lab[bl] = BL
    return dict(labels=lab, d=d, th=th, r=r, centre=(cy, cx), n_te=n_te, bulge=bulge, icm=icm,
                win=tx.breach_window(p, th), **g)


def generate_blastocyst(
    rng: np.random.Generator, *, shape: tuple[int, int] | None = None,
    params: BlastocystParams | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Draw one synthetic blastocyst image and its ground truth.

    Parameters
    ----------
    rng : random generator; the only source of randomness.
    shape : (h, w); None draws it like the real data. Must agree with ``params.shape``.
    params : fixed modes (from :func:`draw_params`, possibly edited); None draws them.

    Returns
    -------
    image : (h, w) uint8 grayscale.
    labels : (h, w) uint8 class indices (0 background, 1 ICM, 2 TE, 3 ZP, 4 BL).
    params : JSON-ready dict of the drawn modes (:meth:`BlastocystParams.to_dict`) plus
        ``generator_version``.
    """
    if params is None:
        params = draw_params(rng, shape)
    elif shape is not None and tuple(shape) != tuple(params.shape):
        raise ValueError(f"shape {tuple(shape)} disagrees with params.shape {params.shape}")
    lay = _layout(params, rng)
    image = np.clip(np.rint(tx.render(params, lay, rng)), 0, 255).astype(np.uint8)
    meta = params.to_dict()
    meta["generator_version"] = GENERATOR_VERSION
    return image, lay["labels"], meta


def pool_name(seed: int, index: int) -> str:
    """File stem of pool image ``index`` drawn with ``seed`` (like ``Blast_PCRM_1201754 D5``)."""
    return f"Blast_SYN_{seed:03d}{index:04d} D5"


def generate_pool(
    n: int, seed: int, *, shape: tuple[int, int] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]:
    """Yield ``(name, image, labels, params)`` for ``n`` images.

    Image ``i`` depends only on ``(seed, i)`` (its generator is ``default_rng([seed, i])``), so
    a longer pool starts with the images of a shorter one.

    Parameters
    ----------
    n : number of images.
    seed : pool seed (>= 0).
    shape : common (h, w); None draws each image's size like the real data.
    """
    for i in range(int(n)):
        image, labels, params = generate_blastocyst(np.random.default_rng([seed, i]), shape=shape)
        yield pool_name(seed, i), image, labels, params


def napari_sample() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample data: 8 synthetic blastocysts and their ground truth as layer-data tuples.

    Imports no napari. Returns ``[(images (8, H, W) uint8, {...}, "image"),
    (labels (8, H, W) uint8, {...}, "labels")]``.
    """
    names, images, labels = [], [], []
    for name, image, lab, _ in generate_pool(8, 0, shape=(377, 447)):
        names.append(name)
        images.append(image)
        labels.append(lab)
    return [
        (np.stack(images), {"name": "synthetic blastocysts", "metadata": {"names": names}},
         "image"),
        (np.stack(labels), {"name": "ground truth", "opacity": 0.4}, "labels"),
    ]
