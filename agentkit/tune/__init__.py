"""Adapting the model: build an instruction dataset from the knowledge base, train a LoRA adapter
with PEFT, export it to GGUF for llama.cpp."""
