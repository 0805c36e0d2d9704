"""Data sources: digits (built in), npz arrays, image folders, python factories."""

from compress.data.sources import DataBundle, DataConfig, TransferConfig, load_data, make_loader

__all__ = ["DataBundle", "DataConfig", "TransferConfig", "load_data", "make_loader"]
