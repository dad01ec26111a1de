"""Configurations of the IMDB sentiment experiment (``ml_collections``, one ``get_config()`` each).

- ``base``: the real setup at a moderate size; every other config overrides it.
- ``cpu_demo``: about 15 minutes on 2 CPU cores.
- ``frontier``: the reward-KL frontier study (14 trained policies, Best-of-N to N = 64), sized
  for one 2-core CPU machine (``experiments/frontier.sh``).
- ``full``: the vBoN paper's scale, for accelerators.
- ``test_tiny``: seconds, for tests and CI (random tiny GPT-2, VADER reward).

``experiments/train.py --config=experiments/configs/<name>.py`` loads one by path; :func:`get`
loads one by name.
"""

import importlib
import pathlib

import ml_collections

# Every module of this folder is a config.
CONFIGS = tuple(sorted(p.stem for p in pathlib.Path(__file__).parent.glob("*.py")
                       if p.stem != "__init__"))


def get(name: str) -> ml_collections.ConfigDict:
    """The config called ``name`` (one of :data:`CONFIGS`)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known configs: {', '.join(CONFIGS)}")
    return importlib.import_module(f"{__name__}.{name}").get_config()
