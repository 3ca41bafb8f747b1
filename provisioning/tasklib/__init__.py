"""``glimpse-provision export-tasklib``: a bundle as one TFLite Task Library searcher file."""
