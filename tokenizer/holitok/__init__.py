"""HoliTok: a continuous speech tokenizer (48 kHz audio <-> 25 Hz x 128-dim latents), exact on the released weights."""
from .compat import UnifiedTokenizer, UnifiedTokenizerWrapper, sanitize_model_config
from .config import HoliTokConfig, SemanticConfig, get_preset_config, load_model_config, preset_names
from .model import HoliTok
from .semantic import SemanticModule

__all__ = ["HoliTok", "HoliTokConfig", "SemanticModule", "SemanticConfig", "UnifiedTokenizer",
           "UnifiedTokenizerWrapper", "get_preset_config", "load_model_config", "preset_names",
           "sanitize_model_config"]
