"""Training the prior: data sources and the DDPM training loop."""
