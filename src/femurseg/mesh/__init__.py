"""femurseg.mesh."""
