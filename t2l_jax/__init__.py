"""Text-to-LoRA: task description -> LoRA adapter (see the T2L issue)."""
