"""Readers of channel data and observations (UFF, Verasonics, Field II, minimal layout, DRUS By files) and the PICMUS registry."""
