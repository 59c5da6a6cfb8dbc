"""Classification models: `spec` describes them without torch; `registry` builds them (imports torch)."""

from models.spec import LITE0, ModelInfo, ModelRequest, PreprocessSpec

__all__ = ["LITE0", "ModelInfo", "ModelRequest", "PreprocessSpec", "available_models", "load_model"]


def __getattr__(name: str):
    # torch is imported only by code that builds a model, never by `import models`.
    if name in ("available_models", "load_model", "LoadedModel"):
        from models import registry

        return getattr(registry, name)
    raise AttributeError(name)
