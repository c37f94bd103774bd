"""One module per architecture; ARCHITECTURES maps HF class names to them."""
from .base import Arch
from .gemma2 import Gemma2
from .gemma3 import Gemma3
from .gemma4 import Gemma4
from .granite import Granite
from .llama import Llama
from .mistral3 import Mistral3
from .olmo2 import Olmo2
from .olmo3 import Olmo3
from .phi3 import Phi3
from .qwen2 import Qwen2
from .qwen3 import Qwen3
from .qwen3moe import Qwen3Moe
from .qwen35 import Qwen35
from .smollm3 import SmolLM3

ARCHITECTURES: dict[str, type[Arch]] = {name: cls for cls in (Llama, Qwen2, Qwen3, Gemma2, Gemma3, Phi3, Mistral3,
                                                              SmolLM3, Granite, Olmo2, Olmo3, Qwen35,
                                                              Gemma4)
                                        for name in cls.hf_names}
ARCHITECTURES.update({name: Qwen3Moe for name in Qwen3Moe.hf_names})
