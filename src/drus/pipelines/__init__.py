"""End-to-end runs: the demo, the numerical study, the PICMUS evaluation and batches of many frames."""
