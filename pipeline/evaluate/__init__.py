"""The evaluate stage: test-set scoring, the report, and the Model Registry decision."""
