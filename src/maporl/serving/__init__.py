"""A trained team outside training: exports (PEFT adapters, merged models), the Hugging Face Hub, and serving."""
