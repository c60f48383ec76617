"""Foundation models: one RGB view in, a dense ``[h, w, d]`` feature map out.

``load_model("clip" | "siglip" | "dinov2" | "precomputed", weights=...)`` builds one;
:func:`cached_features` computes a recording's maps once and keeps them on disk.
open_clip and timm are imported only when a model that needs them is loaded.
"""

from m3_memory.foundation.base import FoundationModel, known_models, load_model, register
from m3_memory.foundation.cache import cached_features, default_cache_root

__all__ = ["FoundationModel", "cached_features", "default_cache_root", "known_models", "load_model", "register"]
