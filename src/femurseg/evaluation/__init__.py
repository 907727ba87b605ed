"""femurseg.evaluation."""
