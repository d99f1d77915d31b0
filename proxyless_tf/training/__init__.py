"""Retraining a found network: the recipe (`recipe.py`)."""
