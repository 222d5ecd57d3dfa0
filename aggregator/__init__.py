"""aggregator stage of logging-apm."""
