"""Configurations (``ml_collections``, one ``get_config()`` each) of two entry points, each family
overriding its own base.

The IMDB sentiment experiment (``experiments/train.py``):

- ``base``: the real setup at a moderate size; every other config of the family overrides it.
- ``cpu_demo``: about 15 minutes on 2 CPU cores.
- ``frontier``: the reward-KL frontier study (14 trained policies, Best-of-N to N = 64), sized
  for one 2-core CPU machine (``experiments/frontier.sh``).
- ``full``: the vBoN paper's scale, for accelerators.
- ``test_tiny``: seconds, for tests and CI (random tiny GPT-2, VADER reward).

The BoNBoN system (``experiments/bonbon.py``), every ``bonbon_*`` config:

- ``bonbon_base``: HH dialogues, Pythia-2.8B, the DeBERTa-v3-large reward, at a moderate size;
  every other ``bonbon_*`` config overrides it.
- ``bonbon_hh``, ``bonbon_tldr``: the paper's scale on HH and on TL;DR, for accelerators.
- ``bonbon_cpu``: the whole pipeline on IMDB prompts on one 2-core CPU machine.
- ``bonbon_tiny``: seconds, for tests and CI (random tiny GPT-2, VADER, fixture files).

An entry point loads one by path (``--config=experiments/configs/<name>.py``); :func:`get`
loads one by name and :func:`base_of` names its base.
"""

import importlib
import pathlib

import ml_collections

# Every module of this folder is a config.
CONFIGS = tuple(sorted(p.stem for p in pathlib.Path(__file__).parent.glob("*.py")
                       if p.stem != "__init__"))


BASES = ("base", "bonbon_base")


def base_of(name: str) -> str:
    """The base config that ``name`` overrides (``name`` itself for a base)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known configs: {', '.join(CONFIGS)}")
    return "bonbon_base" if name.startswith("bonbon_") else "base"


def get(name: str) -> ml_collections.ConfigDict:
    """The config called ``name`` (one of :data:`CONFIGS`)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown config {name!r}; known configs: {', '.join(CONFIGS)}")
    return importlib.import_module(f"{__name__}.{name}").get_config()
