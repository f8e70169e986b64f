"""The Bayesian U-Net and Monte-Carlo dropout sampling.

``build_model(config_or_preset)`` builds the network; ``mc_predict`` draws MC-dropout samples
with BatchNorm frozen. Feature-map access lives in :mod:`napari_alunet.model.features`.
"""

from napari_alunet.model.mc import dropout_modules, mc_dropout_mode, mc_predict
from napari_alunet.model.unet import UNet, build_model, count_parameters

__all__ = [
    "UNet",
    "build_model",
    "count_parameters",
    "dropout_modules",
    "mc_dropout_mode",
    "mc_predict",
]
