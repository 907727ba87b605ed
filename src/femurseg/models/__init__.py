"""femurseg.models."""
