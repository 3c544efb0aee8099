"""Regenerate requirements.lock from pyproject.toml with pip-tools, then environment.yml from the lock.

    python tools/lock.py                    # re-resolve, keeping the lock's pins that still satisfy pyproject.toml
    python tools/lock.py --upgrade          # every package to its newest release that pyproject.toml allows
    python tools/lock.py --from-installed   # pin what the running environment has installed, where it fits
    python tools/lock.py --conda-only       # only rewrite environment.yml from the current lock

`make lock` runs the first (`make lock UPGRADE=1` the second). pip-tools resolves with pip itself, under pip's own
configuration, so torch and torchvision resolve to the same wheels `pip install` takes (on this machine from a
local index, with its hashes).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from vitscope.environment import LOCK_FILE, LOCKED_EXTRAS, conda_environment_yaml, installed_versions

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT_YML = ROOT / "environment.yml"


def compile_command(upgrade: bool) -> list[str]:
    """pip-compile of pyproject.toml: the project, its LOCKED_EXTRAS and its build requirements, exact pins with
    the hashes of every file of each pinned release (so the lock installs from PyPI or from a local index)."""
    cmd = [sys.executable, "-m", "piptools", "compile", "pyproject.toml", "--all-build-deps",
           "--generate-hashes", "--allow-unsafe",   # setuptools/wheel pinned too: `make install` builds with them
           "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",   # no machine's index paths in the lock
           "--output-file", LOCK_FILE]
    cmd += [a for extra in LOCKED_EXTRAS for a in ("--extra", extra)]
    return cmd + (["--upgrade"] if upgrade else [])


def seed_from_installed() -> None:
    """Write the running environment's versions as the lock's previous pins: pip-compile keeps a previous pin when
    it satisfies pyproject.toml, so the new lock records what is installed (and resolves only what is not)."""
    pins = {n: v for n, v in installed_versions().items() if n != "vitscope"}   # the project is not its own pin
    (ROOT / LOCK_FILE).write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--upgrade", action="store_true", help="newest allowed release of every package")
    mode.add_argument("--from-installed", action="store_true", help="pin the running environment's versions")
    mode.add_argument("--conda-only", action="store_true", help="only rewrite environment.yml from the lock")
    args = parser.parse_args(argv)

    if not args.conda_only:
        try:
            metadata.version("pip-tools")
        except metadata.PackageNotFoundError:
            sys.exit("pip-tools is not installed in this environment: `pip install pip-tools==7.6.2` (or `make lock`)")
        if args.from_installed:
            seed_from_installed()
        # the header names the command to re-run, not pip-compile's arguments
        env = dict(os.environ, CUSTOM_COMPILE_COMMAND="make lock")
        subprocess.run(compile_command(args.upgrade), cwd=ROOT, env=env, check=True)
    ENVIRONMENT_YML.write_text(conda_environment_yaml((ROOT / LOCK_FILE).read_text()))
    print(f"wrote {LOCK_FILE} and {ENVIRONMENT_YML.name}" if not args.conda_only else f"wrote {ENVIRONMENT_YML.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
