"""How a model is judged on the run's held-out rows, the same way for the base, the fine-tune and every
GGUF: heldout.py prepares the rows once, hf_eval.py and gguf_eval.py run the two sides, metrics.py holds
every figure's definition."""
