"""The digital hip-QCT phantom: labelled hip CT scans, deterministically from a seed."""
