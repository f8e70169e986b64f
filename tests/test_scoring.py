"""score_pool: streaming, bounded memory, BatchNorm untouched, seeded; predict_with_uncertainty."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from napari_alunet.acquisition import rank
from napari_alunet.config import AcquisitionConfig
from napari_alunet.events import drain
from napari_alunet.inference import predict_with_uncertainty
from napari_alunet.model.mc import SeededDropout
from napari_alunet.model.unet import build_model
from napari_alunet.scoring import ScoreProgress, score_pool
from napari_alunet.uncertainty import image_scores

S = 32


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny")
    # Non-trivial running statistics, so a leak into batch statistics would show.
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 1, S, S) * 2 + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _model()


class _Pool:
    """A synthetic pool on 'disk' that records how it is read."""

    def __init__(self, n: int = 13, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = {100 + i: rng.normal(size=(1, S, S)).astype(np.float32) for i in range(n)}
        self.calls: list[list[int]] = []

    @property
    def ids(self) -> list[int]:
        return list(self.images)

    def __call__(self, ids: list[int]) -> np.ndarray:
        self.calls.append(list(ids))
        return np.stack([self.images[i] for i in ids])


def _run(model: nn.Module, pool: _Pool, top_k: int = 3,
         keep_maps: tuple[str, ...] = ("entropy", "bald", "kl", "js"), **cfg: object):
    config = AcquisitionConfig(**{"passes": 4, "batch_size": 4, **cfg})  # type: ignore[arg-type]
    events: list[ScoreProgress] = []
    result = drain(score_pool(model, pool.ids, pool, config, top_k=top_k, keep_maps=keep_maps),
                   events.append)
    return result, events


def test_streaming_equals_scoring_all_at_once_and_ranks_by_score(model: nn.Module) -> None:
    # Plain top k ("none"): the stochastic default is tested in test_acquisition.py.
    streamed, events = _run(model, _Pool(), batch_size=3, diversity="none")
    at_once, _ = _run(model, _Pool(), batch_size=64, diversity="none")
    assert streamed.scores.keys() == at_once.scores.keys() == set(_Pool().ids)
    np.testing.assert_allclose(list(streamed.scores.values()),
                               [at_once.scores[i] for i in streamed.scores], rtol=1e-5, atol=1e-7)
    assert streamed.ranked == at_once.ranked
    by_score = sorted(streamed.scores, key=lambda i: (-streamed.scores[i], i))
    assert streamed.ranked == by_score[:3]
    scoring = [e for e in events if e.stage == "score"]
    assert [e.done for e in scoring] == [3, 6, 9, 12, 13] and scoring[-1].total == 13
    assert all(e.images_per_second > 0 for e in events)
    # An image's score does not depend on its batch mates: score a subset of the pool alone.
    alone, _ = _run(model, _Pool(), batch_size=2, subset=5, diversity="none")
    for image_id, value in alone.scores.items():
        assert value == pytest.approx(streamed.scores[image_id], rel=1e-5, abs=1e-7)


def test_memory_is_bounded_maps_only_for_chosen(model: nn.Module) -> None:
    pool = _Pool(n=11)
    result, _ = _run(model, pool, top_k=2, batch_size=4, strategy="entropy")
    assert all(len(c) <= 4 for c in pool.calls)
    # Each pool image is read once for scoring, then the chosen once more for their maps.
    assert sorted(i for c in pool.calls for i in c) == sorted(pool.ids + result.ranked)
    assert len(result.ranked) == 2 and set(result.maps) == set(result.predictions) == set(
        result.ranked)
    for image_id in result.ranked:
        assert set(result.maps[image_id]) == {"entropy", "bald", "kl", "js"}
        for value in result.maps[image_id].values():
            assert value.shape == (S, S) and value.dtype == np.float32
        assert result.predictions[image_id].shape == (S, S)
        assert result.predictions[image_id].dtype == np.uint8
        # The recomputed map gives the very score the image was ranked by.
        recomputed = image_scores(torch.from_numpy(result.maps[image_id]["entropy"])[None])
        assert float(recomputed) == pytest.approx(result.scores[image_id], rel=1e-5)


def test_batchnorm_statistics_and_modes_unchanged(model: nn.Module) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # a caller in training mode gets training mode back
    _run(model, _Pool(), strategy="kl", diversity="feature")
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    # dropout probabilities are restored after seeded sampling
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} <= {0.3}


def test_reproducible_with_the_same_seed_and_not_with_another(model: nn.Module) -> None:
    torch.manual_seed(123)  # the global RNG plays no part
    a, _ = _run(model, _Pool(), strategy="bald", seed=7)
    torch.manual_seed(456)
    b, _ = _run(model, _Pool(), strategy="bald", seed=7)
    c, _ = _run(model, _Pool(), strategy="bald", seed=8)
    assert a.scores == b.scores and a.ranked == b.ranked
    for image_id in a.ranked:
        np.testing.assert_array_equal(a.maps[image_id]["bald"], b.maps[image_id]["bald"])
    assert a.scores != c.scores


def test_random_strategy_does_not_run_the_model_on_the_pool(model: nn.Module) -> None:
    rows: list[int] = []
    handle = model.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[0]))
    try:
        pool = _Pool()
        result, events = _run(model, pool, top_k=2, strategy="random", seed=3)
    finally:
        handle.remove()
    assert result.scores == {}
    assert result.ranked == rank({i: 0.0 for i in pool.ids}, 2, strategy="random",
                                 rng=np.random.default_rng(3))
    # Only the 2 chosen images ran: 4 MC passes each plus one deterministic pass (for kl/js).
    assert sum(rows) == 2 * (4 + 1)
    assert pool.calls == [result.ranked] and {e.stage for e in events} == {"review"}
    assert set(result.maps) == set(result.ranked)


@pytest.mark.parametrize("diversity", ["power", "feature"])
def test_diversity_chooses_top_k_with_maps(model: nn.Module, diversity: str) -> None:
    result, _ = _run(model, _Pool(), top_k=4, strategy="js", diversity=diversity,
                     keep_maps=("margin",))
    assert len(set(result.ranked)) == 4 and set(result.maps) == set(result.ranked)
    assert set(result.maps[result.ranked[0]]) == {"margin", "js"}  # the strategy's map is added
    again, _ = _run(model, _Pool(), top_k=4, strategy="js", diversity=diversity,
                    keep_maps=("margin",))
    assert again.ranked == result.ranked


def test_seeded_dropout_keeps_the_dropout_rate() -> None:
    net = nn.Sequential(nn.Dropout(0.25))
    x = torch.ones(2, 64, 64)
    with torch.no_grad(), SeededDropout(net.train(), seed=1) as seeded:
        seeded.begin([5, 6])
        out = net(x)
        seeded.begin([6])
        again = net(x[:1])
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.02
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))
    torch.testing.assert_close(again[0], out[1])  # the mask belongs to the image, not the row
    assert not torch.equal(out[0], out[1]) and net[0].p == 0.25


class _Pointwise(nn.Module):
    """A 1x1 convolution: commutes with every flip and rotation, so TTA must change nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_tta_inverts_each_transform_exactly() -> None:
    images = np.random.default_rng(0).normal(size=(3, 1, 12, 12)).astype(np.float32)
    net = _Pointwise()
    soft = predict_with_uncertainty(net, images, method="softmax")
    tta = predict_with_uncertainty(net, images, method="tta", batch_size=2)
    np.testing.assert_allclose(tta[2], soft[2], atol=1e-6)
    np.testing.assert_array_equal(tta[0], soft[0])
    np.testing.assert_allclose(tta[1], soft[1], atol=1e-6)
    assert soft[0].dtype == np.uint8 and soft[1].dtype == np.float32
    assert soft[2].shape == (3, 3, 12, 12)


def test_predict_with_uncertainty_methods_on_the_unet(model: nn.Module) -> None:
    images = np.random.default_rng(1).normal(size=(3, 1, S, S)).astype(np.float32)
    labels, unc, mean = predict_with_uncertainty(model, images, method="mc", passes=6, batch_size=2)
    _, unc2, _ = predict_with_uncertainty(model, images, method="mc", passes=6, batch_size=3)
    np.testing.assert_allclose(unc, unc2, rtol=1e-5, atol=1e-6)  # per-image masks: batch-free
    np.testing.assert_array_equal(labels, mean.argmax(1))
    assert unc.shape == (3, S, S) and (unc >= 0).all() and (unc <= np.log(5) + 1e-6).all()
    soft = predict_with_uncertainty(model, images, method="softmax")
    tta = predict_with_uncertainty(model, images, method="tta")
    assert not np.allclose(mean, soft[2])  # dropout did something
    np.testing.assert_allclose(tta[2].sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="unknown method"):
        predict_with_uncertainty(model, images, method="ensemble")


def test_bad_config_is_reported(model: nn.Module) -> None:
    """A bad setting is refused when the config is made (before any scoring or saving),
    naming the option; the scorer still refuses a config it cannot use."""
    for bad, named in (({"strategy": "bold"}, "strategy"), ({"reduction": "sum"}, "reduction"),
                       ({"diversity": "coreset"}, "diversity"), ({"passes": 0}, "passes")):
        with pytest.raises(ValueError, match=named):
            dataclasses.replace(AcquisitionConfig(), **bad)
    pool = _Pool()
    with pytest.raises(ValueError, match="top_k"):
        drain(score_pool(model, pool.ids, pool, AcquisitionConfig(), top_k=-1))


def test_scoring_follows_the_training_precision(model: nn.Module) -> None:
    """The training config's precision reaches the scorer (training/device.py's one rule):
    bf16 autocast changes the scores a little, float32 is the default on the CPU, and an
    unknown precision is refused before any image is read."""
    pool = _Pool(n=6)
    config = AcquisitionConfig(passes=2, batch_size=3)

    def scores(precision: str) -> np.ndarray:
        result = drain(score_pool(model, pool.ids, pool, config, top_k=2, keep_maps=(),
                                  precision=precision))
        return np.array([result.scores[i] for i in pool.ids])

    fp32, auto, bf16 = scores("fp32"), scores("auto"), scores("bf16")
    np.testing.assert_array_equal(fp32, auto)  # "auto" is float32 on the CPU
    assert not np.array_equal(fp32, bf16)
    np.testing.assert_allclose(fp32, bf16, rtol=0.1, atol=0.02)
    pool.calls.clear()
    with pytest.raises(ValueError, match="precision"):
        scores("fp8")
    assert pool.calls == []
