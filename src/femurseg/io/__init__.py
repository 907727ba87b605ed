"""femurseg.io: read scans and label maps (files, DICOM series), write them atomically, convert to arrays.

Public names
------------
read_image(path, *, series_uid=None) -> SimpleITK.Image
write_image(image, path, *, reference=None, compress=True) -> Path
read_series_info(folder) -> list[SeriesInfo]; choose_series(infos, *, series_uid=None); read_series(info)
grid_of(image) -> Grid; require_same_grid(image, reference, *, what); image_from_array(array_zyx, grid) -> SimpleITK.Image; array_of(image) -> ndarray (z, y, x)
format_of(path) -> str
"""

from femurseg.io.dicom import SeriesInfo, choose_series, read_series, read_series_info
from femurseg.io.images import array_of, grid_of, image_from_array, require_same_grid
from femurseg.io.read import FILE_FORMATS, format_of, read_image
from femurseg.io.write import WRITE_FORMATS, write_image

__all__ = [
    "read_image",
    "write_image",
    "read_series_info",
    "choose_series",
    "read_series",
    "SeriesInfo",
    "grid_of",
    "image_from_array",
    "array_of",
    "require_same_grid",
    "format_of",
    "FILE_FORMATS",
    "WRITE_FORMATS",
]
