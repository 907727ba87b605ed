"""femurseg.viz."""
