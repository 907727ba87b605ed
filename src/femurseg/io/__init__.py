"""femurseg.io."""
