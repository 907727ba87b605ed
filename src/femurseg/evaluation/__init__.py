"""femurseg.evaluation: segmentation metrics (mm-aware) and cohort statistics."""

from femurseg.evaluation.metrics import (
    assd,
    compare_labels,
    compare_masks,
    dice,
    hausdorff,
    sensitivity,
    specificity,
    surface_distances,
    volume_agreement,
    volume_ml,
)

__all__ = [
    "assd", "compare_labels", "compare_masks", "dice", "hausdorff", "sensitivity", "specificity",
    "surface_distances", "volume_agreement", "volume_ml",
]
