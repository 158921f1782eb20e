"""MLflow for the train and evaluate stages: runs, datasets, lineage tags, the served model."""
