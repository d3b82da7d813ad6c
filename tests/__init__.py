"""The test suite (a regular package, so a stray top-level `tests` package in site-packages cannot shadow it)."""
