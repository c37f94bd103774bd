"""The train step: train.py runs it (QLoRA on CUDA, LoRA on the CPU); sft.py is TRL's trainer with
edgetune's batch order (sampler.py) and loss (loss.py); targets.py says which layers get adapters."""
