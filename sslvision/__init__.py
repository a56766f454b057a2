"""sslvision: self-supervised vision pretraining with honest evaluation protocols."""

__version__ = "0.1.0"
