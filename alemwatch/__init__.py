"""alemwatch: the safety programme for alemtuzumab (Lemtrada) in relapsing MS."""

__version__ = "0.1.0"
