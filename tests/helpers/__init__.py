"""Helper code shared by the tests (not tests themselves): DICOM series writing and synthetic hips with tiny bundles.

``pyproject.toml`` puts ``tests/`` on pytest's ``pythonpath``, so tests import these plainly::

    from helpers.dicom import write_ct_series
    from helpers.synthetic import synthetic_hip, build_tiny_bundles
"""
