"""The train step: train.py runs it (QLoRA on CUDA, LoRA on the CPU); sft.py is TRL's trainer with
edgetune's batch order (sampler.py) and loss (loss.py); targets.py says which layers get adapters;
lora_cpu.py makes PEFT's LoRA layers cheaper on the CPU (dropout, input casts)."""
