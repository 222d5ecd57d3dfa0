"""alerting stage of logging-apm."""
