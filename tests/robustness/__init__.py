"""The robustness corpus: bad inputs through the command line (see conftest.py)."""
