"""Training and fine-tuning encoders on corpus stores (PyTorch Lightning).

Light on import: this package imports nothing heavy until used. The pieces:

- :mod:`ecgfm.train.config`: the typed run configuration (YAML + ``key=value`` overrides).
- :mod:`ecgfm.train.module`: :class:`~ecgfm.train.module.SupervisedModule`, the LightningModule.
- :mod:`ecgfm.train.run`: :func:`~ecgfm.train.run.train`, :func:`~ecgfm.train.run.finetune`,
  :func:`~ecgfm.train.run.embed`.
- :mod:`ecgfm.train.pretrain`: :func:`~ecgfm.train.pretrain.pretrain`, self-supervised
  pretraining (``ecgfm pretrain``).
- :mod:`ecgfm.train.cli`: the ``ecgfm train``, ``ecgfm finetune`` and ``ecgfm embed`` commands.

>>> from ecgfm.train import load_config, train                        # doctest: +SKIP
>>> result = train(load_config("configs/train/ptbxl_resnet1d18.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from ecgfm.train.config import TrainConfig, load_config, save_config

_LAZY = {"train": "ecgfm.train.run", "finetune": "ecgfm.train.run", "embed": "ecgfm.train.run",
         "SupervisedModule": "ecgfm.train.module", "transfer": "ecgfm.train.transfer",
         "pretrain": "ecgfm.train.pretrain", "pretrain_language": "ecgfm.train.language"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ecgfm.train' has no attribute {name!r}")


__all__ = ["SupervisedModule", "TrainConfig", "embed", "finetune", "load_config", "pretrain", "save_config", "train",
           "transfer"]
