"""PyTorch models: named sub-networks (towers), the training loop and batch scoring live apart."""
