"""The quantize step: sweep.py runs it (the recipe's files, or the `auto` sweep that picks the smallest
good file); imatrix.py computes the importance matrix from the user's rows, quantize.py drives llama.cpp's
quantizer, mixed.py plans mixed types per tensor, kld.py measures what each file lost."""
