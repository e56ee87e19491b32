"""Data: toy world datasets, Parquet activation files, splits and torch datasets."""
