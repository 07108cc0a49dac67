"""The training core: every family, one seed or several stacked, goes through this loop.

- :mod:`.train`: ``train(cfg)``, the importable entry of ``gencompare train`` for one run:
  build each part, hand them to the loop, finish (final grid, evaluation, ``metrics.json``);
- :mod:`.loop`: one training step and the loop, handed a step strategy;
- :mod:`.state`: :class:`~.state.TrainState`, what a checkpoint holds and how it is restored;
- :mod:`.callbacks`: the loop's duties (log, sample grid, periodic evaluation, checkpoint);
- :mod:`.signals`: SIGINT / SIGTERM (:class:`~.signals.StopRequest`, :class:`~.signals.Interrupted`);
- :mod:`.stacked`: the strategy that trains S seeds as one model under ``torch.func.vmap``,
  and the protocol it reads of a family;
- :mod:`.seed_batch`: ``trainer.seed_batch=S``: S runs set up, trained by that strategy, and
  finished as S ordinary runs.

The entry functions are imported from their modules (``from gencompare.train.train import
train``): this package re-exports nothing, so that ``gencompare.train.train`` stays the module.
"""
