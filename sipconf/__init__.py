"""sipconf: a pure-Python SIP/RTP conference bridge for small offices."""

__version__ = "0.1.0"
