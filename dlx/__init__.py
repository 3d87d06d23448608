"""dlx: a command-line experiment runner for deep-learning image classification."""

__version__ = "0.1.0"
