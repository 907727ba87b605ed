"""femurseg.qct: quantitative CT of the proximal femur.

Public names (density calibration, :mod:`femurseg.qct.calibration`):

- :func:`calibrate` (find the phantom in a scan, fit it → :class:`CalibrationResult`), :func:`fit_calibration`
  (rods measured by hand), :func:`calibrate_internal` (phantomless), :func:`user_calibration`
- :func:`hu_to_density` (HU → mg/cm³ of the calibration's material)
- :class:`DensityCalibration`, :class:`Material`, :class:`PhantomSpec`, :data:`PRESETS`, :func:`mindways_model3`,
  :func:`load_phantom_spec`
"""

from femurseg.qct.calibration import (
    PRESETS,
    CalibrationResult,
    DensityCalibration,
    PhantomSpec,
    calibrate,
    calibrate_internal,
    fit_calibration,
    hu_to_density,
    load_phantom_spec,
    mindways_model3,
    user_calibration,
)
from femurseg.qct.analysis import QCTAnalysis, analyse_scan
from femurseg.qct.frame import FemurFrame, femur_frame
from femurseg.qct.report import write_qct_outputs
from femurseg.qct.units import Material

__all__ = [
    "calibrate",
    "fit_calibration",
    "calibrate_internal",
    "user_calibration",
    "hu_to_density",
    "CalibrationResult",
    "DensityCalibration",
    "Material",
    "PhantomSpec",
    "PRESETS",
    "mindways_model3",
    "load_phantom_spec",
    "analyse_scan",
    "QCTAnalysis",
    "write_qct_outputs",
    "femur_frame",
    "FemurFrame",
]
