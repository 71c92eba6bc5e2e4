"""sideman: a live improvisation daemon that streams an LSTM's notes to a MIDI port."""

__version__ = "0.1.0"
