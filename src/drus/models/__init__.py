"""The diffusion prior network (ADM UNet) and its checkpoint formats."""
