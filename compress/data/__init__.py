"""Data sources: digits (built in), npz arrays, image folders, python factories.

The config (``compress.config.data``) is torch-free; ``compress.data.sources`` loads the data.
"""
