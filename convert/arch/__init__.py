"""One module per architecture; ARCHITECTURES maps HF class names to them."""
from .base import Arch
from .gemma3 import Gemma3
from .llama import Llama
from .phi3 import Phi3
from .qwen2 import Qwen2
from .qwen3 import Qwen3

ARCHITECTURES: dict[str, type[Arch]] = {name: cls for cls in (Llama, Qwen2, Qwen3, Gemma3, Phi3)
                                        for name in cls.hf_names}
