"""What every stage shares: the params schema, paths and file names, errors, atomic writes,
locks and redaction."""
