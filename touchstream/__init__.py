"""touchstream: real-time customer-relationship analytics."""

__version__ = "0.1.0"
