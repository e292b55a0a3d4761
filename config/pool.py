"""The worker's pool: Celery's prefork pool with one repair, until upstream has it.

Named by ``CELERY_WORKER_POOL`` (``--pool prefork`` then means this class).

The failure it repairs (celery 5.7.0, billiard 4.3.2): a pool child that dies while the consumer
is reconnecting to a lost broker is untracked at once (``AsynPool._untrack_child_process`` sets its
``_sentinel_poll`` to None) but stays in the pool's list until ``maintain_pool`` reaps it, which
the event loop runs and which cannot run while the consumer reconnects. Once connected, the
consumer registers the pool with the event loop again and ``_track_child_process`` hands that None
to ``hub.add_reader`` (celery/concurrency/asynpool.py, line 586): ``ValueError('file descriptor is
None')``, which ``iterate_file_descriptors_safely`` does not catch (it catches OSError and
AttributeError), and the worker's main process exits with "Unrecoverable error". Seen in the
broker-restart storms with pool children killed (the OOM killer, a crash, the chaos harness).

The repair: a child already untracked is skipped; it has exited, and ``maintain_pool`` (every
5 s, and at the next child exit) reaps it and starts its replacement, as it would have anyway.
``config/tests/test_broker.py`` shows the failure with Celery's own pool class and the repair.
"""

from celery.concurrency import asynpool, prefork


class AsynPool(asynpool.AsynPool):
    def _track_child_process(self, proc, hub) -> None:
        if getattr(proc, "_sentinel_poll", False) is None:
            return  # exited and untracked: maintain_pool replaces it
        super()._track_child_process(proc, hub)


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
