"""Data handling: ingest raw interaction data and split it into train/val/test with fixed candidates."""
