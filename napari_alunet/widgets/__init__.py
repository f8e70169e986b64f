"""The napari GUI: dock widgets, reader and helpers (the only package importing Qt or napari).

napari loads these modules lazily through the manifest (``napari.yaml``); importing
:mod:`napari_alunet` itself never imports this package.
"""
