"""Data preparation: manifests, synthetic corpus, latent extraction."""
