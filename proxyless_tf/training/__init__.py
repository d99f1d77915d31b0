"""Retraining a found network: settings (`config.py`), data (`inputs.py`, `pipeline.py`), the recipe (`recipe.py`)."""
