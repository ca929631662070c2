"""One module per resource of the platform, each with a blocking and an awaited class."""
