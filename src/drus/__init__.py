"""drus — diffusion reconstruction of ultrasound images and diffusion-variance echogenicity maps."""

__version__ = "0.1.0"
