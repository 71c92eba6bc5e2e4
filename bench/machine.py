"""The machine and software a benchmark ran on: CPU, cores, load and package versions."""

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

PACKAGES = ("numpy", "tensorflow", "keras", "mido", "python-rtmidi", "python-osc")


@dataclass
class Machine:
    cpu_model: str
    cores: int
    system: str
    python: str
    versions: dict[str, str]
    jackd: str


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """Return the first `model name` of /proc/cpuinfo, or the platform's processor name elsewhere."""
    try:
        with open(cpuinfo, encoding="utf-8") as lines:
            for line in lines:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def jackd_version() -> str:
    """Return the first line of `jackd --version`, or why it is unknown."""
    try:
        result = subprocess.run(["jackd", "--version"], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def describe_machine() -> Machine:
    return Machine(
        cpu_model=cpu_model(),
        cores=os.cpu_count() or 0,
        system=f"{platform.system()} {platform.release()} {platform.machine()}",
        python=sys.version.split()[0],
        versions={name: package_version(name) for name in PACKAGES},
        jackd=jackd_version(),
    )


def load_average() -> tuple[float, float, float]:
    """Return the 1, 5 and 15 minute load averages: runnable processes averaged over the period."""
    return os.getloadavg()
