"""Geometry, texture, optics and rendering helpers of the synthetic blastocyst generator.

Everything here is vectorised numpy/scipy and draws its randomness from the ``rng`` it is given,
so :mod:`napari_alunet.data.synthetic` stays deterministic. Lengths are in pixels of the image
being drawn (the caller scales them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

BACKGROUND, ICM, TE, ZP, BL = range(5)


def fourier(theta: np.ndarray | float, coeffs, first: int = 2) -> np.ndarray:
    """Sum of ``a_k cos(k theta + phi_k)`` for harmonics ``k = first, first + 1, ...``.

    Parameters
    ----------
    theta : angles in radians (any shape).
    coeffs : sequence of ``(amplitude, phase)`` pairs.
    first : harmonic of the first pair.
    """
    out = np.zeros_like(np.asarray(theta, dtype=np.float64))
    for k, (amp, phase) in enumerate(coeffs, start=first):
        out = out + amp * np.cos(k * theta + phase)
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise with a correlation length of about ``scale`` pixels.

    Fine noise is a gaussian-filtered white field; coarse noise is drawn on a coarse grid and
    upsampled with a cubic spline, which costs the same at any ``scale``.
    """
    h, w = shape
    if scale <= 3.0:
        field = ndi.gaussian_filter(rng.standard_normal(shape), max(scale, 0.3) / 2.0)
    else:
        grid = rng.standard_normal((int(np.ceil(h / scale)) + 4, int(np.ceil(w / scale)) + 4))
        field = ndi.zoom(grid, scale, order=3, mode="nearest", grid_mode=False)
        field = field[2 : h + 2, 2 : w + 2]
        if field.shape != (h, w):  # zoom rounds: pad the last row/column if short
            field = np.pad(field, ((0, h - field.shape[0]), (0, w - field.shape[1])), mode="edge")
    field = field - field.mean()
    return field / (field.std() + 1e-9)


def line_profile(distance: np.ndarray, width: float) -> np.ndarray:
    """A soft line of peak 1 and ``width`` (pixels, >= 0.5) at ``distance`` 0."""
    return np.exp(-((distance / max(width, 0.5)) ** 2))


def voronoi_cells(
    rng: np.random.Generator, mask: np.ndarray, cell: float, *, jitter: float = 0.4,
    membrane: float = 1.0, round_cells: bool = False, border: bool = True,
) -> dict[str, np.ndarray]:
    """Packed polygonal cells filling ``mask`` (jittered-grid seeds, nearest-seed regions).

    Parameters
    ----------
    rng : random generator.
    mask : (H, W) bool region to fill with cells.
    cell : typical cell diameter in pixels.
    jitter : seed displacement as a fraction of ``cell`` (0 gives a square grid).
    membrane : membrane half-width in pixels.
    round_cells : draw each cell as a round cell (a circular outline of about 0.42 ``cell``
        around its seed, the gaps between the circles in ``gap``) instead of a polygon: the
        inner cell mass's rounded cells. Circles are cut where they meet a neighbour's region.
    border : also draw a membrane along the mask's edge (False: only between cells, for walls
        that cross a region without outlining it).

    Returns
    -------
    dict with (H, W) float arrays ``membrane`` (1 on cell outlines incl. the mask border),
    ``nucleus`` (1 at cell centres, falling off over a third of a cell), ``cell_value``
    (per-cell standard-normal value), ``gap`` (1 between round cells; 0 for polygons) and int
    array ``ids`` (0 outside ``mask``).
    """
    h, w = mask.shape
    out = {k: np.zeros((h, w)) for k in ("membrane", "nucleus", "cell_value", "gap")}
    out["ids"] = np.zeros((h, w), dtype=np.int32)
    if not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    pad = int(np.ceil(membrane * 2)) + 1
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    sub = mask[y0:y1, x0:x1]
    cell = max(float(cell), 1.5)
    gy, gx = np.meshgrid(np.arange(cell / 2, sub.shape[0], cell),
                         np.arange(cell / 2, sub.shape[1], cell), indexing="ij")
    gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * cell / 2  # hexagonal-ish packing
    sy = np.clip(np.rint(gy + rng.uniform(-jitter, jitter, gy.shape) * cell), 0, sub.shape[0] - 1)
    sx = np.clip(np.rint(gx + rng.uniform(-jitter, jitter, gx.shape) * cell), 0, sub.shape[1] - 1)
    sy, sx = sy.astype(int).ravel(), sx.astype(int).ravel()
    keep = sub[sy, sx]
    sy, sx = sy[keep], sx[keep]
    if sy.size == 0:  # region smaller than a cell: one seed at its centre of mass
        cy, cx = np.argwhere(sub).mean(axis=0)
        sy, sx = np.array([int(cy)]), np.array([int(cx)])
        if not sub[sy[0], sx[0]]:
            sy, sx = np.argwhere(sub)[:1].T
    seeds = np.zeros(sub.shape, dtype=np.int32)
    seeds[sy, sx] = np.arange(1, sy.size + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    ids = np.where(sub, seeds[iy, ix], 0)
    edges = np.zeros(sub.shape, dtype=bool)
    edges[:-1] |= ids[:-1] != ids[1:]
    edges[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    if not border:  # only where two cells meet, not where a cell meets the outside
        edges[:-1] &= (ids[:-1] > 0) & (ids[1:] > 0)
        edges[:, :-1] &= (ids[:, :-1] > 0) & (ids[:, 1:] > 0)
    edge_dist = ndi.distance_transform_edt(~edges)
    values = rng.standard_normal(sy.size + 1)
    values[0] = 0.0
    rad = np.maximum(cell / 3.0, 0.7)
    region = (slice(y0, y1), slice(x0, x1))
    if round_cells:
        # A radius per cell around its seed; a circle larger than its Voronoi region is cut
        # at the region's edge (the neighbour's circle takes over there).
        radius = 0.42 * cell * rng.uniform(0.85, 1.1, sy.size + 1)[ids]
        ring = line_profile(dist - radius, membrane)
        outline = line_profile(ndi.distance_transform_edt(sub), membrane)
        out["membrane"][region] = np.where(sub, np.maximum(ring, outline), 0.0)
        out["gap"][region] = np.where(sub, np.clip((dist - radius) / max(membrane, 0.5), 0, 1),
                                      0.0)
        out["nucleus"][region] = np.where(sub, np.exp(-((dist / rad) ** 2)), 0.0)
        out["cell_value"][region] = values[ids]
        out["ids"][region] = ids
        return out
    out["membrane"][region] = np.where(sub, line_profile(edge_dist, membrane), 0.0)
    out["nucleus"][region] = np.where(sub, np.exp(-((dist / rad) ** 2)), 0.0)
    out["cell_value"][region] = values[ids]
    out["ids"][region] = ids
    return out


def relief(image: np.ndarray, sigma: float, angle: float) -> np.ndarray:
    """Modulation-contrast (Hoffman) shading: the directional derivative of a smoothed image.

    The result is in grey levels per pixel times ``sigma``, so a step of height ``h`` gives
    light/dark fringes of about ``0.4 h`` whatever the blur.
    """
    smooth = ndi.gaussian_filter(image, sigma)
    gy, gx = np.gradient(smooth)
    return sigma * (np.cos(angle) * gx + np.sin(angle) * gy)


def illumination(shape: tuple[int, int], amplitude: float, angle: float,
                 vignette: float) -> np.ndarray:
    """A multiplicative field: a linear ramp of +-``amplitude`` along ``angle`` and a radial
    fall-off."""
    h, w = shape
    y = (np.arange(h)[:, None] - (h - 1) / 2) / max(h, w)
    x = (np.arange(w)[None, :] - (w - 1) / 2) / max(h, w)
    ramp = 2 * (np.cos(angle) * x + np.sin(angle) * y)
    return 1.0 + amplitude * ramp - vignette * 4 * (x**2 + y**2)


# -- geometry --------------------------------------------------------------------------------------
def fit_in_frame(p: Any) -> None:
    """Pull the embryo towards the centre (then shrink it) until the frame cuts at most into
    the outer part of the zona ring, so the ring stays closed in the mask."""
    theta = np.linspace(-np.pi, np.pi, 720, endpoint=False)
    h, w = p.shape
    s = p.scale
    for _ in range(60):
        ro, tz = outer_radius(p, theta) * s, zona_width(p, theta) * s
        cy, cx = (h - 1) / 2 + p.centre[0] * s, (w - 1) / 2 + p.centre[1] * s
        sy, sx = np.sin(theta), np.cos(theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            ty = np.where(sy > 0, (h - 1 - cy) / sy, np.where(sy < 0, -cy / sy, np.inf))
            tx_ = np.where(sx > 0, (w - 1 - cx) / sx, np.where(sx < 0, -cx / sx, np.inf))
        cut = ro - np.minimum(ty, tx_)
        if np.all(cut <= np.maximum(0.55 * tz - 1.5, 0.0)):
            return
        if abs(p.centre[0]) + abs(p.centre[1]) > 2.0:
            p.centre = (p.centre[0] * 0.85, p.centre[1] * 0.85)
        else:
            p.radii = (p.radii[0] * 0.97, p.radii[1] * 0.97)


def angle_diff(a: np.ndarray, b: float) -> np.ndarray:
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def outer_radius(p: Any, theta: np.ndarray) -> np.ndarray:
    c, s = np.cos(theta - p.rotation), np.sin(theta - p.rotation)
    ellipse = 1.0 / np.sqrt((c / p.radii[1]) ** 2 + (s / p.radii[0]) ** 2)
    return ellipse * (1.0 + fourier(theta, p.outline))


def breach_window(p: Any, theta: np.ndarray) -> np.ndarray:
    if p.breach_width <= 0:
        return np.zeros_like(theta)
    t = np.clip((p.breach_width - np.abs(angle_diff(theta, p.breach_angle)))
                / (0.35 * p.breach_width), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def zona_width(p: Any, theta: np.ndarray) -> np.ndarray:
    """Zona width (reference px); in a breach it narrows to a thread of >= 1.6 image pixels."""
    amp, phase = p.zp_variation
    tz = p.zp_thickness * (1.0 + amp * np.cos(theta - phase))
    thread = max(1.6 / p.scale, 0.12 * p.zp_thickness)
    win = breach_window(p, theta)
    return tz * (1 - win) + thread * win



# -- rendering -------------------------------------------------------------------------------------
#: Grey levels of the classes and strengths of their textures (structure before the relief,
#: grain after it), tuned so the finished images match the real-image figures in
#: sample_data/README.md.
TEXTURE = {"bg": 136.5, "bl": 114.5, "bl_mottle": 4.0, "bl_membrane": 40.0,
           "te": 116.0, "te_membrane": 90.0, "te_cell": 24.0, "te_nucleus": 26.0,
           "icm": 133.0, "icm_membrane": 72.0, "icm_cell": 18.0, "icm_nucleus": 20.0,
           "icm_gap": 24.0, "zona": 129.0, "zona_inner": 7.0}
#: Grain (fine granular texture) std per class: background, ICM, TE, ZP, BL.
GRAIN = (1.5, 17.0, 34.0, 12.0, 18.0)
#: Cell size of the few large thin-walled cells crossing the blastocoel (reference px).
LUMEN_CELL = 120.0


def _zona_texture(rho: np.ndarray, striae: np.ndarray | float) -> np.ndarray:
    """Zona brightness across the ring (``rho`` 0 at the outer edge, 1 at the inner edge):
    a smooth band a few grey levels darker than the medium, with no line at its outer edge
    (real zonae fade into the background) and a slight darkening towards the embryo."""
    return TEXTURE["zona"] - TEXTURE["zona_inner"] * np.exp(-(((rho - 1.0) / 0.2) ** 2)) + striae


def _cells_texture(cells: dict[str, np.ndarray], kind: str, contrast: float) -> np.ndarray:
    t = TEXTURE
    return t[kind] + contrast * (-t[kind + "_membrane"] * cells["membrane"]
                                 + t[kind + "_cell"] * cells["cell_value"]
                                 - t[kind + "_nucleus"] * cells["nucleus"])


def render(p: Any, lay: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Grey-level image (float) of a layout."""
    h, w = p.shape
    s = p.scale
    lab, d = lay["labels"], lay["d"]
    mw = max(1.1 * s, 0.5)  # membrane half-width
    t = TEXTURE
    img = t["bg"] + 2.0 * smooth_noise(rng, (h, w), 40 * s)
    # cavity and perivitelline fluid: mid grey with a faint mottle
    cavity = t["bl"] + t["bl_mottle"] * smooth_noise(rng, (h, w), 10 * s)
    # a smooth lumen crossed by the thin walls of a few large cells
    lumen = voronoi_cells(rng, lab == BL, LUMEN_CELL * s, membrane=0.6 * mw, border=False)
    cavity = cavity - t["bl_membrane"] * lumen["membrane"] * rng.uniform(0.4, 1.0)
    img = np.where(lab == BL, cavity, img)
    # zona: smooth, bright-ish, faint concentric structure; faded where it is breached
    rho = np.clip(d / np.maximum(lay["tz"], 1e-6), 0, 1)
    zona = _zona_texture(rho, 1.5 * smooth_noise(rng, (h, w), 6 * s))
    zona = zona * (1 - 0.7 * lay["win"]) + t["bl"] * 0.7 * lay["win"]
    img = np.where(lab == ZP, zona, img)
    # trophectoderm: one layer of flattened cells along the ring
    n, tt = lay["n_te"], np.maximum(lay["te_in"] - lay["te_out"], 1e-6)
    cellw = 2 * np.pi * np.maximum(lay["r"], 1.0) / n
    q = (d - lay["te_out"]) / tt
    u = lay["u0"] + rng.normal(0, 0.3) * (q - 0.5) + 0.05 * smooth_noise(rng, (h, w), 8 * s)
    du = np.abs(u - np.rint(u))
    te_cells = {
        "membrane": np.maximum.reduce([line_profile(du * cellw, mw),
                                       line_profile(d - lay["te_out"], mw),
                                       line_profile(d - lay["te_in"], mw)]),
        "cell_value": rng.standard_normal(n)[np.floor(u).astype(int) % n],
        "nucleus": np.exp(-((((u % 1.0) - 0.5) / 0.18) ** 2) - ((q - 0.5) / 0.25) ** 2),
    }
    te_img = _cells_texture(te_cells, "te", p.te_contrast)
    if lay["bulge"].any():
        bulge_cells = voronoi_cells(rng, lay["bulge"] & (lab == TE), 0.5 * p.te_cell_width * s,
                                       membrane=mw)
        te_img = np.where(lay["bulge"], _cells_texture(bulge_cells, "te", p.te_contrast), te_img)
    img = np.where(lab == TE, te_img, img)
    # inner cell mass: packed small cells
    icm_cells = voronoi_cells(rng, lab == ICM, p.icm_cell * s, membrane=mw, round_cells=True)
    icm_img = _cells_texture(icm_cells, "icm", p.icm_contrast)
    icm_img = icm_img - p.icm_contrast * t["icm_gap"] * icm_cells["gap"]
    img = np.where(lab == ICM, icm_img, img)
    grain_amp = np.asarray(GRAIN)[lab] * np.select(
        [lab == ICM, lab == TE], [p.icm_contrast, p.te_contrast], 1.0)
    if p.neighbour_angle is not None:
        img, grain_amp = _neighbour(p, lay, rng, img, grain_amp, mw)
    if getattr(p, "n_fragments", 0):
        img, grain_amp = _fragments(p, lay, rng, img, grain_amp, mw)
    img = img + _debris(p, lay, rng)
    # modulation-contrast relief on the structure, then granular texture, optics and noise
    img = (img + p.relief[0] * relief(img, max(1.5 * s, 0.5), p.relief[1])
           + p.relief[0] * 1.5 * relief(img, 6 * s, p.relief[1]))
    img = img + grain_amp * smooth_noise(rng, (h, w), max(1.8 * s, 0.6))
    img = img * illumination((h, w), *p.illumination)
    img = ndi.gaussian_filter(img, max(p.blur * s, 0.3))
    img = img + rng.normal(0, p.noise, (h, w))
    return (img - 119.0) * p.gain + 119.0 + p.offset


def _neighbour(p: Any, lay: dict[str, Any], rng: np.random.Generator,
               img: np.ndarray, grain: np.ndarray, mw: float) -> tuple[np.ndarray, np.ndarray]:
    """A second embryo (labelled background) just inside the frame edge."""
    s = p.scale
    a = p.neighbour_angle
    R2 = np.mean(p.radii) * s * rng.uniform(0.85, 1.0)
    dist = np.mean(p.radii) * s + R2 + rng.uniform(4, 20) * s
    cy, cx = lay["centre"][0] + dist * np.sin(a), lay["centre"][1] + dist * np.cos(a)
    h, w = p.shape
    d2 = R2 - np.hypot(np.arange(h)[:, None] - cy, np.arange(w)[None, :] - cx)
    free = lay["labels"] == BACKGROUND
    tz2, te2 = p.zp_thickness * s, 28.0 * s
    zona = free & (d2 >= 0) & (d2 < tz2)
    if not zona.any():
        return img, grain
    te = free & (d2 >= tz2) & (d2 < tz2 + te2)
    cavity = free & (d2 >= tz2 + te2)
    cells = voronoi_cells(rng, te, 50 * s, membrane=mw)
    img = np.where(zona, _zona_texture(d2 / tz2, 0.0), img)
    img = np.where(te, _cells_texture(cells, "te", 0.9), img)
    img = np.where(cavity, TEXTURE["bl"], img)
    grain = np.select([zona, te, cavity], [GRAIN[ZP], GRAIN[TE], GRAIN[BL]], grain)
    return img, grain


def _fragments(p: Any, lay: dict[str, Any], rng: np.random.Generator, img: np.ndarray,
               grain: np.ndarray, mw: float) -> tuple[np.ndarray, np.ndarray]:
    """Round cell fragments in the medium, clear of the zona (labelled background): they look
    like cells, so a model must learn where the embryo is, not only what cells look like."""
    h, w = p.shape
    s = p.scale
    yy, xx = np.arange(h)[:, None], np.arange(w)[None, :]
    outside = lay["d"] < 0
    for _ in range(int(p.n_fragments)):
        radius = rng.uniform(8.0, 24.0) * s
        ys, xs = np.nonzero(lay["d"] < -(radius + 6 * s))
        if ys.size == 0:
            break
        pick = rng.integers(ys.size)
        r = np.hypot(yy - ys[pick], xx - xs[pick])
        body = (r < radius) & outside & (lay["labels"] == BACKGROUND)
        if not body.any():
            continue
        value = TEXTURE["icm"] - 8.0 + 10.0 * rng.standard_normal()
        img = np.where(body, value - TEXTURE["icm_membrane"] * line_profile(r - radius + mw, mw),
                       img)
        grain = np.where(body, GRAIN[ICM], grain)
    return img, grain


def _debris(p: Any, lay: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Small dark/bright particles in the medium."""
    h, w = p.shape
    out = np.zeros((h, w))
    ys, xs = rng.integers(0, h, p.n_debris), rng.integers(0, w, p.n_debris)
    keep = lay["d"][ys, xs] < -4 * p.scale
    out[ys[keep], xs[keep]] = rng.choice([-1.0, 1.0], keep.sum(), p=[0.7, 0.3])
    sigma = max(2.0 * p.scale, 0.5)
    return ndi.gaussian_filter(out, sigma) * 2 * np.pi * sigma**2 * 22.0
