"""Metrics (gCNR, SNR, FWHM) and the despeckling baseline (ADMSS)."""
