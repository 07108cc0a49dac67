# Makes conf/ the package `gencompare.conf` (see setup.py): Hydra loads configs from a
# package (`pkg://gencompare.conf`) only when it has an __init__.py.
