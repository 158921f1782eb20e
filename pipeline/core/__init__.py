"""What every stage shares: the params schema and its YAML reader, profiles, paths and file
names, errors, atomic writes, locks, redaction, and the Keras backend facts tracking may know."""
