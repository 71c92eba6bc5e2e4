"""Map the three source folders onto the one import package `sideman`.

Subpackages are discovered, not listed: a hand-written package list silently
drops a new subpackage from the wheel while an editable install still works.
"""

from setuptools import find_packages, setup

SOURCE_FOLDERS = {
    "sideman": "daemon",
    "sideman.plugins": "plugins",
    "sideman.config": "config",
}

packages = []
package_dir = {}
for package, folder in SOURCE_FOLDERS.items():
    packages.append(package)
    package_dir[package] = folder
    for subpackage in find_packages(folder):
        packages.append(f"{package}.{subpackage}")
        package_dir[f"{package}.{subpackage}"] = f"{folder}/{subpackage.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
