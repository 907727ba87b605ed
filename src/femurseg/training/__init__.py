"""femurseg.training."""
