"""Converters from other model formats into the .emoe container."""
from .hf import convert_hf, parse_bits

__all__ = ["convert_hf", "parse_bits"]
