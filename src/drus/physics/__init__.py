"""The plane-wave physics: geometry, pulse, the forward operator H, the matched-filter beamformer B and DAS, phantoms, the SVD operators and the exact decomposition of BH."""
