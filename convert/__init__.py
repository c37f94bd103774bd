"""HF -> GGUF and PEFT adapter -> GGUF, on the official gguf package. Imported as edgetune.convert."""
from .hf_to_gguf import (
                         SUPPORTED_ARCHITECTURES,
                         check_convertible,
                         convert_hf_to_gguf,
                         input_order,
                         load_arch,
                         needs_qk_permute,
                         tensor_name_map,
)
from .lora import convert_lora_to_gguf

__all__ = ["SUPPORTED_ARCHITECTURES", "check_convertible", "convert_hf_to_gguf", "convert_lora_to_gguf", "input_order",
           "load_arch", "needs_qk_permute", "tensor_name_map"]
