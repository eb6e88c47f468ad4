"""End-to-end runs: the demo and the numerical study."""
