"""Texture and optics helpers of the synthetic blastocyst generator.

Everything here is vectorised numpy/scipy and draws its randomness from the ``rng`` it is given,
so :mod:`napari_alunet.data.synthetic` stays deterministic. Lengths are in pixels of the image
being drawn (the caller scales them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


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
    membrane: float = 1.0,
) -> dict[str, np.ndarray]:
    """Packed polygonal cells filling ``mask`` (jittered-grid seeds, nearest-seed regions).

    Parameters
    ----------
    rng : random generator.
    mask : (H, W) bool region to fill with cells.
    cell : typical cell diameter in pixels.
    jitter : seed displacement as a fraction of ``cell`` (0 gives a square grid).
    membrane : membrane half-width in pixels.

    Returns
    -------
    dict with (H, W) float arrays ``membrane`` (1 on cell outlines incl. the mask border),
    ``nucleus`` (1 at cell centres, falling off over a third of a cell), ``cell_value``
    (per-cell standard-normal value) and int array ``ids`` (0 outside ``mask``).
    """
    h, w = mask.shape
    out = {k: np.zeros((h, w)) for k in ("membrane", "nucleus", "cell_value")}
    out["ids"] = np.zeros((h, w), dtype=np.int32)
    if not mask.any():
        return out
    ys, xs = np.nonzero(mask)
    pad = int(np.ceil(membrane * 2)) + 1
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)
    sub = mask[y0:y1, x0:x1]
    cell = max(float(cell), 1.5)
    gy, gx = np.meshgrid(np.arange(cell / 2, sub.shape[0], cell), np.arange(cell / 2, sub.shape[1], cell),
                         indexing="ij")
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
    edge_dist = ndi.distance_transform_edt(~edges)
    values = rng.standard_normal(sy.size + 1)
    values[0] = 0.0
    rad = np.maximum(cell / 3.0, 0.7)
    region = (slice(y0, y1), slice(x0, x1))
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
    """A multiplicative field: a linear ramp of +-``amplitude`` along ``angle`` and a radial fall-off."""
    h, w = shape
    y = (np.arange(h)[:, None] - (h - 1) / 2) / max(h, w)
    x = (np.arange(w)[None, :] - (w - 1) / 2) / max(h, w)
    ramp = 2 * (np.cos(angle) * x + np.sin(angle) * y)
    return 1.0 + amplitude * ramp - vignette * 4 * (x**2 + y**2)
