"""One module per ``logapm`` command (see ``aggregator.cli``)."""
