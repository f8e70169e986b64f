"""napari-alunet: active learning for blastocyst segmentation with a Bayesian U-Net.

Importing the package pulls in no Qt, napari or torch; the GUI lives in
:mod:`napari_alunet.widgets` and is loaded lazily by napari through the manifest.
"""

__version__ = "0.1.0"
