"""``glimpse-provision train``: projection heads (and unfrozen blocks) trained on captioned photos."""
