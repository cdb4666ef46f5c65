"""Fine-tuning and in-place distillation with patch drop (single process or torchrun)."""
