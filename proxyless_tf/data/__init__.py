"""Datasets for search, retraining and export."""
