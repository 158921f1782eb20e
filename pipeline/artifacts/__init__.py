"""The files stages hand each other; each format is read and written by one module here."""
