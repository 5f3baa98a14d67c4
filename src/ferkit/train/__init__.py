"""Training stack (torch): config as plain data, tensor augmentation, a readable loop, evaluation."""
