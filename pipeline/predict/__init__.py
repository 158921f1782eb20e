"""Batch prediction with a registered model, and drift checks of the batches it sees."""
