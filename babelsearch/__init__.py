"""babelsearch command line: the composition root that wires indexer, engine and webui together."""
