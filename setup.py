"""Package list for setuptools; the metadata lives in pyproject.toml.

The Hydra configs stay at the repository's top level (``conf/``) and ship inside the
package as ``gencompare.conf`` (``gencompare/conf/`` in a wheel), where the CLI finds
them as ``pkg://gencompare.conf``. pyproject's ``packages.find`` cannot add a package
from outside ``gencompare/``, and a hand-written list would go stale when a subpackage
is added, so the subpackages are found here and the one mapping is added to them.
"""
from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["gencompare", "gencompare.*"]), "gencompare.conf"],
    package_dir={"gencompare.conf": "conf"},
)
