"""Training of the unified model: latent stores, task sampler, dynamic batching, checkpoints, run setup."""
