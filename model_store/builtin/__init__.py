"""Built-in city models that the demo registers (built locally, no downloads)."""
