"""Shipped weights of the built-in generators, and how they were made (see README.md here)."""
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent
WEIGHTS_FORMAT = "latent-directions/gan-weights/v1"
