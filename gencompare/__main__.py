"""``python -m gencompare <command> ...``, the same as the ``gencompare`` script; what
``torchrun --nproc_per_node=N -m gencompare train ...`` runs in each rank. The legacy
launcher's ``--local_rank=N`` (before the command) is dropped here, its value kept in
``LOCAL_RANK`` (:func:`gencompare.launch.strip_local_rank`)."""
import sys

from gencompare.cli import main
from gencompare.launch import strip_local_rank

if __name__ == "__main__":
    sys.argv = [sys.argv[0], *strip_local_rank(sys.argv[1:])]
    main()
