"""sed: streaming real-time sound event detection (runtime; never imports torch)."""

__version__ = "0.1.0"
