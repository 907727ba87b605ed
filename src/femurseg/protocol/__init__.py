"""``femurseg protocol``: the paper's experiment (stratified K-fold cross-validation + hold-out, on the entire
cohort and on men and women) on a user's labelled cohort, as resumable units, with a report.

- :mod:`femurseg.protocol.profiles`: the settings and the tiny / quick / paper profiles;
- :mod:`femurseg.protocol.units`: one unit (train, segment, score) with its ``done.json``;
- :mod:`femurseg.protocol.runner`: splits, units, selection, the retrained model on the hold-out;
- :mod:`femurseg.protocol.report`: ``report/index.html`` and ``report.md``.
"""

from femurseg.protocol.profiles import PROFILES, ProtocolSettings
from femurseg.protocol.runner import run_protocol

__all__ = ["PROFILES", "ProtocolSettings", "run_protocol"]
