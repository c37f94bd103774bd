"""What the user brings: the recipe, the dataset and its chat template, the base model (built-in, a folder,
a GGUF file or a hub id), and the offline demo."""
