"""Reproducibility: verify a notebook, compare outputs, the dataflow analysis, tidy and HTML exports."""
