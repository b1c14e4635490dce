"""flowtrace: map how information flows inside video LLMs."""

__version__ = "0.1.0"
