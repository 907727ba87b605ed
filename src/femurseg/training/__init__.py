"""femurseg.training: train a V-Net on a labelled cohort (cohort folder or nnU-Net dataset) and export a bundle.

Public names
------------
fit(config, *, data_dir, run_dir, resume=False, progress=True) -> Path      the bundle folder (run_dir/model)
TrainConfig, AugmentationConfig, load_train_config(path), save_train_config(config, path)
find_cases(data_dir) -> list[CaseRecord]; load_case(record); split_cases(records, ...)
"""

from femurseg.training.config import AugmentationConfig, TrainConfig, load_train_config, save_train_config
from femurseg.training.data import CaseRecord, find_cases, load_case, split_cases
from femurseg.training.trainer import fit

__all__ = [
    "fit",
    "TrainConfig",
    "AugmentationConfig",
    "load_train_config",
    "save_train_config",
    "CaseRecord",
    "find_cases",
    "load_case",
    "split_cases",
]
