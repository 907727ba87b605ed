"""femurseg.qct."""
