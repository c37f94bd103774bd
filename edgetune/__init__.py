"""edgetune: dataset + base model -> fine-tuned, quantized, smoke-tested GGUF for the CPU."""

__version__ = "0.1.0"
