"""Redundant synthetic pools "with headroom, as in real labs": embryos, frames, rare modes.

A real lab's unlabelled pool is not a set of independent images: a time-lapse incubator films
each embryo many times, so most images are near-duplicates of a few others, and most embryos
are ordinary expanded blastocysts while the cases a model gets wrong (early, hatching, hatched,
collapsed, poor-grade embryos) are rare. Active-learning strategies differ exactly there: a
strategy that picks several frames of one embryo wastes labels, one that never looks at a rare
mode leaves accuracy on the table. This module draws such pools from the generator of
:mod:`napari_alunet.data.synthetic`.

Structure
---------
*Modes* (:data:`MODES`) are categories of embryos, defined on the drawn parameters:

==============  ==============================================  ==================
mode            definition                                      default frequency
==============  ==============================================  ==================
``common``      stage 2-4, not collapsed, ICM and TE grade A/B  0.70
``early``       stage 1 (any grades)                            0.06
``hatching``    stage 5 (any grades)                            0.06
``hatched``     stage 6 (any grades)                            0.06
``collapsed``   stage 2-4, collapsed (any grades)               0.06
``grade_C``     stage 3-4, not collapsed, ICM and TE grade C    0.06
==============  ==============================================  ==================

Frequencies are per *embryo*, drawn independently (so a small pool may, like a small lab,
lack a rare mode); the number of frames per embryo does not depend on the mode, so the
fraction of *images* per mode has the same expectation.

An *embryo* is one :class:`~napari_alunet.data.synthetic.BlastocystParams` (its stage, grades,
geometry and optics) and an integer seed. Its *frames* (:func:`render_frame`) are that embryo
slightly later: a little out of focus or sharper, turned by a few degrees, drifted by a few
pixels, the ICM and the outline moved a little, expanded by up to 2-4 % over the frames, the
illumination changed a little, and the random texture draws (cells, granularity) 70 %
correlated with the embryo's own while the sensor noise is fresh. Frames of one embryo thus
look clearly alike; different embryos do not.

Determinism: everything depends only on the seeds. A pool's embryo ``e`` depends only on
``(seed, e)`` and the modes and frame counts are drawn in embryo order, so a pool of ``n``
images starts with the images of any shorter pool of the same seed (the last embryo of the
shorter pool may have fewer frames). The stratified test set (:func:`generate_test_set`) comes
from its own seed stream, so its embryos are fresh, and its embryo ids start at
:data:`TEST_EMBRYO_BASE`, out of the range of any pool's ids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from napari_alunet.data import _synthetic_texture as tx
from napari_alunet.data import synthetic as syn
from napari_alunet.data.synthetic import BlastocystParams

__all__ = [
    "MODES", "MODE_P", "TEST_EMBRYO_BASE", "REDUNDANT_VERSION", "classify_mode", "draw_embryo",
    "render_frame", "generate_redundant_pool", "generate_test_set", "pool_frame_name",
    "stratified_test_name", "plan_pool", "frame_params", "check_seed", "check_frames",
    "mode_probabilities", "mask_jitter_rng",
]

#: Bump whenever the images, labels or plan drawn for a given seed change (on top of
#: :data:`napari_alunet.data.synthetic.GENERATOR_VERSION`).
REDUNDANT_VERSION = "1.0.0"

#: Embryo categories, the common one first.
MODES: tuple[str, ...] = ("common", "early", "hatching", "hatched", "collapsed", "grade_C")
#: Default frequency of embryos per mode: most embryos are ordinary, each rare mode ~6 %.
MODE_P: dict[str, float] = {"common": 0.70, "early": 0.06, "hatching": 0.06, "hatched": 0.06,
                            "collapsed": 0.06, "grade_C": 0.06}
#: Embryo ids of the test set start here; a pool may hold fewer embryos than this.
TEST_EMBRYO_BASE = 1_000_000
#: Correlation of each random texture draw between two frames of one embryo.
TEXTURE_SHARE = 0.7
POOL_CSV = "pool.csv"
CSV_COLUMNS = ("name", "embryo", "frame", "mode", "split")

# Seed-stream tags: the first word of every SeedSequence entropy list here, so the streams of
# this module never coincide with each other or with synthetic.py's default_rng([seed, i]).
_TAG = 0x2ED0
_PLAN, _POOL_EMBRYO, _TEST_EMBRYO, _BASE, _FRAME, _SHARED, _GROWTH, _MASK = range(1, 9)


# -- modes -----------------------------------------------------------------------------------------
def classify_mode(params: BlastocystParams | Mapping[str, Any]) -> str | None:
    """The mode of an embryo's parameters, or None if it is in none (e.g. stage 3 with grades A/C).

    Parameters
    ----------
    params : :class:`BlastocystParams` or its ``to_dict()``.
    """
    get: Callable[[str], Any] = (
        params.get if isinstance(params, Mapping) else (lambda k: getattr(params, k)))
    stage, collapsed = int(get("stage")), bool(get("collapsed"))
    grades = {get("icm_grade"), get("te_grade")}
    if stage in (1, 5, 6):
        return {1: "early", 5: "hatching", 6: "hatched"}[stage]
    if collapsed:
        return "collapsed"
    if grades <= {"A", "B"}:
        return "common"
    if grades == {"C"} and stage in (3, 4):
        return "grade_C"
    return None


def _weighted_stage(rng: np.random.Generator, stages: Sequence[int]) -> int:
    p = np.array([syn.STAGES[s]["p"] for s in stages])
    return int(rng.choice(list(stages), p=p / p.sum()))


def _set_grades(p: BlastocystParams, icm_grade: str, te_grade: str) -> None:
    """Regrade ``p`` in place, keeping its drawn per-embryo variation of cell size and contrast
    (the ratios of the grade tables of :data:`synthetic.GRADES`)."""
    gi_old, gi_new = syn.GRADES[p.icm_grade], syn.GRADES[icm_grade]
    gt_old, gt_new = syn.GRADES[p.te_grade], syn.GRADES[te_grade]
    p.icm_cell *= gi_new[1] / gi_old[1]
    p.icm_contrast *= gi_new[2] / gi_old[2]
    # draw_params shrinks a grade-C inner cell mass by 0.85
    p.icm_radius *= (0.85 if icm_grade == "C" else 1.0) / (0.85 if p.icm_grade == "C" else 1.0)
    p.te_cell_width *= gt_new[3] / gt_old[3]
    p.te_contrast *= gt_new[4] / gt_old[4]
    p.icm_grade, p.te_grade = icm_grade, te_grade


def draw_embryo(rng: np.random.Generator, mode: str,
                shape: tuple[int, int] | None = None) -> BlastocystParams:
    """Draw the base parameters (the identity) of one embryo of ``mode``.

    Parameters
    ----------
    rng : random generator (advanced by the draw).
    mode : one of :data:`MODES`.
    shape : image (h, w) of all its frames; None draws it like the real data.

    Returns
    -------
    BlastocystParams
        Drawn by :func:`~napari_alunet.data.synthetic.draw_params` with the mode's stage (and
        collapse) forced; grades outside the mode are redrawn within it, keeping the drawn cell
        size and contrast variation. ``classify_mode`` of the result is ``mode``.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    stage: int
    collapsed = False
    if mode in ("early", "hatching", "hatched"):
        stage = {"early": 1, "hatching": 5, "hatched": 6}[mode]
    elif mode == "grade_C":
        stage = _weighted_stage(rng, (3, 4))
    else:
        stage = _weighted_stage(rng, (2, 3, 4))
        collapsed = mode == "collapsed"
    p = syn.draw_params(rng, shape, stage=stage, collapsed=collapsed)
    if mode == "grade_C":
        _set_grades(p, "C", "C")
    elif mode == "common":
        ab = [syn.GRADES["A"][0], syn.GRADES["B"][0]]
        ab_p = np.array(ab) / sum(ab)
        icm, te = (g if g != "C" else str(rng.choice(["A", "B"], p=ab_p))
                   for g in (p.icm_grade, p.te_grade))
        _set_grades(p, icm, te)
    return p


# -- frames ----------------------------------------------------------------------------------------
class _PartlySharedRng:
    """Stand-in for the ``np.random.Generator`` of the renderer whose draws are partly an
    embryo's own, so the cells and granularity of its frames are alike but not identical.

    The ``k``-th call draws from the embryo-wide stream ``default_rng([.., embryo_seed, k])``
    (the same in every frame, whatever the sizes of other calls) and from the frame's own
    generator, and blends the two: gaussian draws as ``sqrt(share) a + sqrt(1 - share) b``
    (still standard normal, correlation ``share`` between frames), uniform draws as
    ``(a + (1 - share) (b - 1/2)) mod 1`` (still uniform). Other methods use the frame's own.
    """

    def __init__(self, embryo_seed: int, frame_rng: np.random.Generator, share: float):
        self._seed, self._own, self._calls = int(embryo_seed), frame_rng, 0
        self._a, self._b, self._spread = np.sqrt(share), np.sqrt(1.0 - share), 1.0 - share

    def _shared(self) -> np.random.Generator:
        self._calls += 1
        return np.random.default_rng([_TAG, _SHARED, self._seed, self._calls])

    def standard_normal(self, size: Any = None) -> Any:
        shared = self._shared().standard_normal(size)
        return self._a * shared + self._b * self._own.standard_normal(size)

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return loc + scale * self.standard_normal(size)

    def random(self, size: Any = None) -> Any:
        return (self._shared().random(size) + self._spread * (self._own.random(size) - 0.5)) % 1.0

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        return low + (high - low) * self.random(size)

    def __getattr__(self, name: str) -> Any:  # integers, choice, ...: the frame's own
        return getattr(self._own, name)


def _jitter_harmonics(rng: np.random.Generator, coeffs: list[tuple[float, float]], rel: float,
                      phase: float, turn: float = 0.0, first: int = 2) -> list[tuple[float, float]]:
    """Perturb ``(amplitude, phase)`` harmonics by a relative amplitude and an absolute phase
    noise, and turn the shape by ``turn`` radians (harmonic ``k`` phase ``- k turn``)."""
    return [(float(a * (1.0 + rng.normal(0, rel))), float(ph + rng.normal(0, phase) - k * turn))
            for k, (a, ph) in enumerate(coeffs, start=first)]


def frame_params(base: BlastocystParams, embryo_seed: int, frame: int,
                 shape: tuple[int, int] | None = None) -> BlastocystParams:
    """The parameters of frame ``frame`` of an embryo: ``base`` slightly moved (see the module
    docstring). Deterministic from ``(base, embryo_seed, frame, shape)``.

    Parameters
    ----------
    base : the embryo (from :func:`draw_embryo`); not modified.
    embryo_seed : the embryo's seed (>= 0).
    frame : frame index (>= 0); the expansion grows with it.
    shape : image (h, w); None keeps ``base.shape`` (lengths are in reference pixels, so another
        shape shows the same embryo at another size).
    """
    if frame < 0 or embryo_seed < 0:
        raise ValueError(f"frame and embryo_seed must be >= 0, not {frame} and {embryo_seed}")
    rng = np.random.default_rng([_TAG, _FRAME, int(embryo_seed), int(frame), 0])
    # the embryo's own expansion rate: 0.3-0.6 % per frame, so 2-4 % after 7 frames
    rate = np.random.default_rng([_TAG, _GROWTH, int(embryo_seed)]).uniform(0.003, 0.006)
    p = dataclasses.replace(base)
    if shape is not None:
        p.shape = (int(shape[0]), int(shape[1]))
    turn = float(rng.normal(0, np.deg2rad(3.0)))  # the embryo turns by a few degrees
    grow = float(1.0 + rate * frame + rng.normal(0, 0.003))
    p.rotation += turn
    p.icm_angle += turn + float(rng.normal(0, 0.06))  # the ICM slides a little along the TE
    p.breach_angle += turn
    if p.neighbour_angle is not None:
        p.neighbour_angle += turn
    p.zp_variation = (p.zp_variation[0], p.zp_variation[1] + turn)
    p.outline = _jitter_harmonics(rng, base.outline, 0.12, 0.08, turn)
    p.fold = _jitter_harmonics(rng, base.fold, 0.12, 0.12, turn)
    p.icm_outline = _jitter_harmonics(rng, base.icm_outline, 0.15, 0.2)
    p.icm_radius *= float(rng.normal(1.0, 0.025))
    # expansion: the zona stretches (and thins), a hatching embryo pushes further out
    p.radii = (p.radii[0] * grow, p.radii[1] * grow)
    p.zp_thickness /= grow
    p.bulge *= grow
    # a few reference pixels of stage drift (about 1/3 image pixel per reference px at 128 px)
    p.centre = (p.centre[0] + float(rng.normal(0, 5.0)), p.centre[1] + float(rng.normal(0, 5.0)))
    # optics: focus, illumination and camera drift a little
    p.blur = float(np.clip(base.blur * np.exp(rng.normal(0, 0.15)), 0.4, 2.0))
    amp, angle, vignette = base.illumination
    p.illumination = (float(max(amp * (1 + rng.normal(0, 0.1)), 0.0)),
                      float(angle + rng.normal(0, 0.1)),
                      float(max(vignette + rng.normal(0, 0.01), 0.0)))
    p.relief = (float(base.relief[0] * (1 + rng.normal(0, 0.05))),
                float(base.relief[1] + rng.normal(0, 0.05)))
    p.noise = float(base.noise * (1 + rng.normal(0, 0.05)))
    p.gain = float(base.gain + rng.normal(0, 0.02))
    p.offset = float(base.offset + rng.normal(0, 1.5))
    tx.fit_in_frame(p)  # drift or growth must not cut the zona ring
    return p


def render_frame(base: BlastocystParams, embryo_seed: int, frame: int,
                 shape: tuple[int, int] | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render frame ``frame`` of an embryo (a time-lapse-like view of the same embryo).

    Parameters
    ----------
    base : the embryo's parameters (from :func:`draw_embryo`); not modified.
    embryo_seed : the embryo's seed (>= 0); its texture draws are shared between frames.
    frame : frame index (>= 0).
    shape : image (h, w); None: ``base.shape``.

    Returns
    -------
    image : (h, w) uint8 grayscale.
    labels : (h, w) uint8 class indices (0 background, 1 ICM, 2 TE, 3 ZP, 4 BL), with
        ``BL == binary_fill_holes(ZP) & ~ZP & ~ICM & ~TE`` like every synthetic image.
    params : the frame's :meth:`BlastocystParams.to_dict` plus ``generator_version``.
    """
    p = frame_params(base, embryo_seed, frame, shape)
    own = np.random.default_rng([_TAG, _FRAME, int(embryo_seed), int(frame), 1])
    textures = _PartlySharedRng(embryo_seed, own, TEXTURE_SHARE)
    # render without sensor noise, which must be fresh in every frame, then add it (scaled by
    # the gain, as the renderer applies the gain after the noise)
    quiet = dataclasses.replace(p, noise=0.0)
    image, labels, meta = syn.generate_blastocyst(textures, params=quiet)  # type: ignore[arg-type]
    noisy = image + own.normal(0.0, p.noise * abs(p.gain), image.shape)
    meta["noise"] = p.noise
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), labels, meta


# -- pools -----------------------------------------------------------------------------------------
def pool_frame_name(seed: int, embryo: int, frame: int) -> str:
    """File stem of a pool frame, e.g. ``Blast_RED_007_e0012_f03 D5``."""
    return f"Blast_RED_{seed:03d}_e{embryo:04d}_f{frame:02d} D5"


def stratified_test_name(seed: int, embryo: int) -> str:
    """File stem of a test-set embryo (one frame), e.g. ``Blast_RED_007_test_e1000004_f00 D5``."""
    return f"Blast_RED_{seed:03d}_test_e{embryo:04d}_f00 D5"


def mode_probabilities(mode_p: Mapping[str, float] | Sequence[float] | None) -> np.ndarray:
    if mode_p is None:
        mode_p = MODE_P
    if isinstance(mode_p, Mapping):
        unknown = set(mode_p) - set(MODES)
        if unknown:
            raise ValueError(f"unknown mode(s) {sorted(unknown)}: modes are {', '.join(MODES)}")
        p = np.array([float(mode_p.get(m, 0.0)) for m in MODES])
    else:
        p = np.asarray(mode_p, dtype=float)
        if p.shape != (len(MODES),):
            raise ValueError(f"mode_p needs {len(MODES)} values ({', '.join(MODES)}), not {p.size}")
    if not np.all(np.isfinite(p)) or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"mode_p must be non-negative with a positive sum, not {p.tolist()}")
    return p / p.sum()


def check_seed(seed: int) -> int:
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, not {seed}")
    return int(seed)


def check_frames(frames: tuple[int, int]) -> tuple[int, int]:
    lo, hi = (int(v) for v in frames)
    if not 1 <= lo <= hi:
        raise ValueError(f"frames must be (min, max) with 1 <= min <= max, not {tuple(frames)}")
    return lo, hi


def plan_pool(n_images: int, seed: int, *, frames: tuple[int, int] = (3, 8),
              mode_p: Mapping[str, float] | Sequence[float] | None = None,
              ) -> list[tuple[int, str, int]]:
    """The embryos of a pool without rendering them: ``[(embryo, mode, n_frames), ...]``.

    Embryos are drawn until their frames reach ``n_images``; each has a mode drawn with
    ``mode_p`` and a number of frames uniform in ``frames`` (both ends included); the last one
    is truncated so the frames sum to ``n_images``.
    """
    if int(n_images) != n_images or n_images < 1:
        raise ValueError(f"the number of images must be an integer >= 1, not {n_images}")
    seed, (lo, hi), p = check_seed(seed), check_frames(frames), mode_probabilities(mode_p)
    rng = np.random.default_rng([_TAG, _PLAN, seed])
    plan: list[tuple[int, str, int]]
    plan, total = [], 0
    while total < n_images:
        embryo = len(plan)
        if embryo >= TEST_EMBRYO_BASE:
            raise ValueError(f"a pool holds at most {TEST_EMBRYO_BASE} embryos")
        mode = MODES[int(rng.choice(len(MODES), p=p))]
        k = min(int(rng.integers(lo, hi + 1)), int(n_images) - total)
        plan.append((embryo, mode, k))
        total += k
    return plan


def _embryo_seed(kind: int, seed: int, *key: int) -> int:
    return int(np.random.SeedSequence([_TAG, kind, seed, *key]).generate_state(1, np.uint64)[0])


def _embryo(embryo_seed: int, mode: str, shape: tuple[int, int] | None) -> BlastocystParams:
    return draw_embryo(np.random.default_rng([_TAG, _BASE, embryo_seed]), mode, shape)


def _info(embryo: int, frame: int, mode: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"embryo": int(embryo), "frame": int(frame), "mode": mode, "params": params}


def generate_redundant_pool(
    n_images: int, seed: int, *, shape: tuple[int, int] | None = None,
    frames: tuple[int, int] = (3, 8),
    mode_p: Mapping[str, float] | Sequence[float] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]:
    """Yield ``(name, image, labels, info)`` for ``n_images`` frames of embryos of all modes.

    Parameters
    ----------
    n_images : number of images (>= 1).
    seed : pool seed (>= 0). Same arguments, identical arrays.
    shape : common (h, w); None draws each embryo's size like the real data.
    frames : (min, max) frames per embryo, both included (>= 1).
    mode_p : frequency of embryos per mode, a ``{mode: p}`` mapping (missing modes 0) or one
        value per :data:`MODES`; normalised. None: :data:`MODE_P`.

    Yields
    ------
    name : :func:`pool_frame_name`.
    image : (h, w) uint8.
    labels : (h, w) uint8 class indices.
    info : ``{"embryo": int (0, 1, ... in order), "frame": int (0, 1, ...), "mode": str,
        "params": dict}`` (the frame's parameters, as :func:`render_frame` returns them).
    """
    seed = check_seed(seed)
    for embryo, mode, n_frames in plan_pool(n_images, seed, frames=frames, mode_p=mode_p):
        eseed = _embryo_seed(_POOL_EMBRYO, seed, embryo)
        base = _embryo(eseed, mode, shape)
        for frame in range(n_frames):
            image, labels, params = render_frame(base, eseed, frame)
            info = _info(embryo, frame, mode, params)
            yield pool_frame_name(seed, embryo, frame), image, labels, info


def generate_test_set(
    n_per_mode: int, seed: int, *, shape: tuple[int, int] | None = None,
) -> Iterator[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]]:
    """Yield a stratified test set: ``n_per_mode`` fresh embryos of every mode, one frame each.

    The embryos come from a seed stream of their own (no pool embryo reappears) and their ids
    are ``TEST_EMBRYO_BASE + k * len(MODES) + m`` for the ``k``-th embryo of mode ``MODES[m]``,
    so they never collide with a pool's ids. Order: ``k`` then mode, so a larger test set
    starts with a smaller one.

    Parameters
    ----------
    n_per_mode : embryos per mode (>= 0).
    seed : seed (>= 0), typically the pool's.
    shape : common (h, w); None draws each embryo's size like the real data.

    Yields
    ------
    ``(name, image, labels, info)`` as :func:`generate_redundant_pool`, names from
    :func:`stratified_test_name`, ``info["frame"]`` 0.
    """
    seed = check_seed(seed)
    if int(n_per_mode) != n_per_mode or n_per_mode < 0:
        raise ValueError(f"the test embryos per mode must be an integer >= 0, not {n_per_mode}")
    for k in range(int(n_per_mode)):
        for m, mode in enumerate(MODES):
            embryo = TEST_EMBRYO_BASE + k * len(MODES) + m
            eseed = _embryo_seed(_TEST_EMBRYO, seed, k, m)
            base = _embryo(eseed, mode, shape)
            image, labels, params = render_frame(base, eseed, 0)
            yield stratified_test_name(seed, embryo), image, labels, _info(embryo, 0, mode, params)


def mask_jitter_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of the colour-mask jitter of the ``index``-th image written from a pool of
    ``seed`` (its own stream: writing masks never shifts what the pool draws)."""
    return np.random.default_rng([_TAG, _MASK, int(seed), int(index)])
