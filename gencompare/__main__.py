"""``python -m gencompare <command> ...``, the same as the ``gencompare`` script; what
``torchrun --nproc_per_node=N -m gencompare train ...`` runs in each rank. The legacy
launcher's ``--local_rank=N`` (before the command) is dropped here, its value kept in
``LOCAL_RANK`` (:func:`gencompare.launch.strip_local_rank`)."""
import sys

from gencompare.cli import _interrupted_at_startup  # cli's own imports are guarded against Ctrl-C

if __name__ == "__main__":
    try:  # Ctrl-C while torch loads (seconds on a busy machine): one line, as in the script's start-up
        from gencompare.cli import main
        from gencompare.launch import strip_local_rank
    except KeyboardInterrupt:
        _interrupted_at_startup()
    sys.argv = [sys.argv[0], *strip_local_rank(sys.argv[1:])]
    main()
