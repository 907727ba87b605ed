"""Density units of QCT: every calibrated density names the material it is equivalent to.

mg/cm³ K2HPO4 (dipotassium phosphate solutions, Mindways phantoms) and mg/cm³ HA (hydroxyapatite, QRM and
Image Analysis phantoms) are different units: the same bone reads differently in each, and no fixed factor converts
one into the other (it depends on the X-ray spectrum).  A :class:`Material` travels with every calibration, rod
and density so that the two are never mixed.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Material"]


class Material(str, Enum):
    """The reference material of a density [mg/cm³ of this material].

    Examples
    --------
    >>> Material.K2HPO4.unit
    'mg/cm³ K2HPO4'
    >>> Material("HA").unit
    'mg/cm³ HA'
    """

    K2HPO4 = "K2HPO4"
    HA = "HA"

    @property
    def unit(self) -> str:
        """The unit of a density of this material, as reports print it."""
        return f"mg/cm³ {self.value}"

    def __str__(self) -> str:
        return self.value
