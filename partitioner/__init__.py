"""Offline half of agilenn: train a split by explainable feature importance and export a bundle.

Needs the `train` extra (torch, onnx). Nothing here is imported by the device or the cloud.
"""
