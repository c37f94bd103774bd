"""What a person does with the files: chat with one on the CPU, serve it behind an OpenAI-compatible API,
and convert existing PEFT adapters in a batch."""
