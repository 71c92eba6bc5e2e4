"""sideman's benchmark: `python -m bench` measures the step latency, onset timing, start-up and offline speed.

It lives beside the package, not in it, because it needs the test helpers
(the private JACK server) and TensorFlow, which a performer's install lacks.
"""
