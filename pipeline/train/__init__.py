"""The train stage: the model, the fit loop, checkpoints, and everything backend-specific."""
