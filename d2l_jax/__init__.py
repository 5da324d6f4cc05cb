"""Doc-to-LoRA: document -> LoRA adapter (see the D2L issue)."""
