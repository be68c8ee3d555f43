"""The base model and its adapters: loading, hardware, LoRA, tokenisation, adapter directories."""
