"""femurseg.inference."""
