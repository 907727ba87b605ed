"""Conventions shared by every part of femurseg: label values, axis order, units.

- numpy arrays are indexed (z, y, x); SimpleITK tuples (size, spacing, index, origin) are (x, y, z).
- World coordinates are LPS millimetres (x to the patient's Left, y Posterior, z Superior), as in DICOM and ITK.
- Image values are Hounsfield units [HU]; label maps are uint8.
"""

from __future__ import annotations

from typing import Final

#: Segmentation labels (patient's sides, from the image's direction cosines).
BACKGROUND: Final = 0
RIGHT_FEMUR: Final = 1
LEFT_FEMUR: Final = 2
FEMUR_LABELS: Final = {"right": RIGHT_FEMUR, "left": LEFT_FEMUR}
LABEL_NAMES: Final = {BACKGROUND: "background", RIGHT_FEMUR: "right femur", LEFT_FEMUR: "left femur"}

#: Where a voxel partly filled by the femur belongs (the label convention of every synthetic case and so of the
#: bundled models): it is femur when the scanner's image of the femur, i.e. the femur's volume fraction blurred
#: by the point-spread function and slice profile, is at least this fraction of a voxel full of bone.  Expert
#: annotators (and threshold-based QCT tools, whose periosteal thresholds sit at a fraction of the cortical peak)
#: mark every voxel that visibly holds bone: on real CT the outermost voxel they include reads ~250–600 HU beside
#: a ~1100–1200 HU cortex, 20–50 % of the way from soft tissue to cortex.  A half-volume rule (0.5) puts the
#: surface ~one voxel inside theirs and under-reports a proximal femur's volume by ~8 % on 1 mm voxels.
FEMUR_LABEL_FRACTION: Final = 0.25

#: The detailed tissue map of the phantom (second label map, for QCT work).  Values are stable: saved files use them.
TISSUES: Final = {
    "air": 0,
    "fat": 1,
    "muscle": 2,
    "skin": 3,
    "femur_cortical": 4,
    "femur_trabecular": 5,
    "pelvis_cortical": 6,
    "pelvis_trabecular": 7,
    "sacrum": 8,
    "marrow": 9,
    "table": 10,
    "calibration_phantom": 11,
    "calibration_rod": 12,
    "bladder": 13,
    "bowel_gas": 14,
    "vessel": 15,
}

#: Reference Hounsfield units.
HU_AIR: Final = -1000.0
HU_WATER: Final = 0.0
