"""Neural networks in PyTorch: the autoencoders whose latent space the OT map works in."""

from .autoencoder import (
    Autoencoder,
    ConvAutoencoder,
    MLPAutoencoder,
    TrainResult,
    build_autoencoder,
    train_autoencoder,
)

__all__ = ["Autoencoder", "ConvAutoencoder", "MLPAutoencoder", "TrainResult", "build_autoencoder", "train_autoencoder"]
