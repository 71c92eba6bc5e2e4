"""Package data: the built-in model bundle, builtin.sideman."""
