"""parsers stage of logging-apm."""
