"""U-Net construction, odd input sizes, MC dropout with BatchNorm frozen, feature maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_alunet.config import MODEL_PRESETS, model_preset
from napari_alunet.model import build_model, count_parameters, mc_dropout_mode, mc_predict
from napari_alunet.model.features import block_activations, list_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k
    }


def _trained_tiny(seed: int = 0, **overrides: object) -> nn.Module:
    """A tiny model whose BN running statistics are not the trivial (0, 1) defaults."""
    torch.manual_seed(seed)
    model = build_model("tiny", **overrides)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 1, 32, 32) * 2 + 0.5)
    return model


def test_presets_and_parameter_counts() -> None:
    gpu = build_model("gpu")
    # The paper-sized U-Net (widths 64..1024) has about 31 M parameters.
    assert 30e6 < count_parameters(gpu) < 32e6
    assert gpu.encoders[0][0].out_channels == 64
    assert gpu.bottleneck[0].out_channels == 1024
    assert count_parameters(build_model("cpu")) < count_parameters(gpu) / 10
    assert build_model(MODEL_PRESETS["tiny"]).config == MODEL_PRESETS["tiny"]
    assert any(isinstance(m, nn.BatchNorm2d) for m in gpu.modules())
    with pytest.raises(ValueError, match="unknown model preset"):
        build_model("huge")


@pytest.mark.parametrize("size", [(32, 32), (33, 33), (31, 17), (45, 64), (5, 7)])
def test_output_shape_for_any_input_size(size: tuple[int, int]) -> None:
    model = build_model("tiny", n_classes=3).eval()
    out = model(torch.randn(2, 1, *size))
    assert out.shape == (2, 3, *size)


def test_odd_size_equals_zero_padded_input_cropped_back() -> None:
    # The internal padding is zeros at the bottom/right: the same as padding by hand to 36x36
    # (the next multiple of 2**depth = 4) and cropping the logits.
    model = build_model("tiny").eval()
    x = torch.randn(1, 1, 33, 35)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 3))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[..., :33, :35])


@pytest.mark.parametrize(
    ("placement", "expected"),
    [("encoder", 2), ("decoder", 2), ("all", 5)],  # tiny: depth 2 -> 2 enc, 1 bottleneck, 2 dec
)
def test_dropout_placement(placement: str, expected: int) -> None:
    model = build_model("tiny", dropout_placement=placement)
    drops = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == expected
    if placement == "encoder":
        assert all(name.startswith("enc_dropouts") for name in drops)
    if placement == "decoder":
        assert all(name.startswith("dec_dropouts") for name in drops)
    assert not [m for m in build_model("tiny", dropout=0.0).modules() if isinstance(m, nn.Dropout)]


def test_mc_predict_leaves_bn_running_stats_and_modes_unchanged() -> None:
    model = _trained_tiny()
    model.train()  # whatever mode the caller had must come back
    before = _bn_buffers(model)
    probs = mc_predict(model, torch.randn(3, 1, 32, 32), passes=4, chunk=2)
    assert probs.shape == (4, 3, 5, 32, 32)
    torch.testing.assert_close(probs.sum(dim=2), torch.ones(4, 3, 32, 32))
    after = _bn_buffers(model)
    assert before.keys() == after.keys() and before
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert all(m.training for m in model.modules())


def test_bn_layers_in_eval_and_dropout_active_during_sampling() -> None:
    model = _trained_tiny()
    seen: list[tuple[str, bool]] = []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.Dropout):
            m.register_forward_hook(
                lambda mod, i, o: seen.append((type(mod).__name__, mod.training)))
    mc_predict(model, torch.randn(2, 1, 32, 32), passes=2)
    assert {t for t in seen} == {("BatchNorm2d", False), ("Dropout", True)}
    samples = mc_predict(model, torch.randn(1, 1, 32, 32), passes=2)
    assert not torch.equal(samples[0], samples[1])  # dropout really samples


def test_no_dropout_image_alone_equals_image_in_a_batch() -> None:
    # With p = 0 the pass is deterministic: any difference would be batch interaction.
    model = _trained_tiny(dropout=0.0)
    x = torch.randn(1, 1, 32, 32)
    mates = torch.randn(5, 1, 32, 32) * 3
    alone = mc_predict(model, x, passes=2)
    together = mc_predict(model, torch.cat([mates[:2], x, mates[2:]]), passes=2)
    torch.testing.assert_close(alone[:, 0], together[:, 2], rtol=1e-5, atol=1e-6)


def test_mc_sample_of_an_image_does_not_depend_on_its_batch_mates() -> None:
    # Same seed and same batch shape => the same dropout masks (they depend on the RNG stream
    # and the shape, not on the values). Swapping the batch mates then may change image 0's
    # samples only through batch interaction, which BN in eval mode rules out.
    model = _trained_tiny()
    x = torch.randn(1, 1, 32, 32)
    mates_a, mates_b = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32) * 4 + 2
    torch.manual_seed(123)
    a = mc_predict(model, torch.cat([x, mates_a]), passes=3)
    torch.manual_seed(123)
    b = mc_predict(model, torch.cat([x, mates_b]), passes=3)
    torch.testing.assert_close(a[:, 0], b[:, 0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a[:, 1:], b[:, 1:])

    # The check has power: the published recipe (model.train()) fails it.
    naive = _trained_tiny()
    naive.train()
    with torch.no_grad():
        torch.manual_seed(123)
        na = torch.softmax(naive(torch.cat([x, mates_a])), 1)
        torch.manual_seed(123)
        nb = torch.softmax(naive(torch.cat([x, mates_b])), 1)
    assert not torch.allclose(na[0], nb[0], atol=1e-3)


def test_mc_mean_converges_to_same_distribution_alone_and_in_batch() -> None:
    model = _trained_tiny()
    x = torch.randn(1, 1, 32, 32)
    torch.manual_seed(1)
    alone = mc_predict(model, x, passes=200).mean(0)[0]
    torch.manual_seed(2)
    batch = mc_predict(model, torch.cat([torch.randn(3, 1, 32, 32), x]), passes=200).mean(0)[3]
    # Different masks, same distribution: means agree to Monte-Carlo error.
    assert (alone - batch).abs().mean() < 0.02


def test_mc_dropout_mode_restores_modes_on_error() -> None:
    model = build_model("tiny").eval()
    with pytest.raises(RuntimeError), mc_dropout_mode(model):
        raise RuntimeError("boom")
    assert not any(m.training for m in model.modules())


def test_block_activations_shapes_and_modes() -> None:
    model = _trained_tiny()
    model.train()
    names = list_blocks(model)
    assert names == ["enc0", "enc1", "bottleneck", "dec1", "dec0", "head"]
    image = torch.randn(1, 1, 32, 32)
    enc1 = block_activations(model, image, "enc1")
    assert enc1.shape == (16, 16, 16) and enc1.dtype == np.float32
    assert block_activations(model, image, "bottleneck").shape == (32, 8, 8)
    head = block_activations(model, image.numpy(), "head")
    model.eval()
    torch.testing.assert_close(torch.from_numpy(head), model(image)[0])
    with pytest.raises(ValueError, match="unknown block"):
        block_activations(model, image, "enc7")
    with pytest.raises(ValueError, match="shape"):
        block_activations(model, torch.randn(2, 1, 32, 32), "enc0")


def test_build_model_copies_config() -> None:
    config = model_preset("tiny")
    model = build_model(config, n_classes=2)
    assert model.config.n_classes == 2 and config.n_classes == 5
    assert model(torch.randn(1, 1, 32, 32)).shape[1] == 2
