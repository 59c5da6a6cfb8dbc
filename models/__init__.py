"""Classification models with their weights, category names and preprocessing, from one place."""

from models.registry import LoadedModel, PreprocessSpec, available_models, load_model

__all__ = ["LoadedModel", "PreprocessSpec", "available_models", "load_model"]
