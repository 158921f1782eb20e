"""Reading runs back to compare them (a sweep's table): no stage runs this, so no stage lists it."""
