"""The Celery broker's transport: kombu's Redis transport with one repair, until upstream has it.

Named by ``CELERY_BROKER_TRANSPORT``, so the worker, beat, the web and every tool that asks the
Celery app for a connection use it.

The failure it repairs (celery 5.7.0, kombu 5.7.0, redis-py 8.1.0; no later release yet): when
the consumer loses the broker, ``Consumer.on_connection_error_after_connected``
(celery/worker/consumer/consumer.py, line 487; added by celery PR #10242) first ``collect()``s the
connection and then ``close()``s it. ``collect()`` closes the channels while the broker is dead:
the task channel's close stops at its BRPOP in flight, and the loop over the others stops at the
first one that cannot delete its auto-delete fanout queue (the remote-control one), each a
connection error it swallows. Then it drops the transport's client (kombu/connection.py, line 429,
``self._transport.client = None``). The ``close()`` that follows closes the task channel for real:
the channel drops its connection pool, and restoring its unacknowledged messages builds a new pool
from ``self.connection.client.hostname`` (kombu/transport/redis.py, line 1959), an
AttributeError on None. ``ignore_errors`` lets through anything that is not a connection error,
and the worker's main process exits: "Unrecoverable error: AttributeError("'NoneType' object has
no attribute 'hostname'")". It needs a task in flight (something to restore) and a BRPOP
outstanding at the moment the broker dies: under load, within a few to a few dozen restarts.

The repair: a channel whose connection is gone, or whose transport no longer has its client,
raises redis-py's ConnectionError when it needs a new connection pool. That is what such a
channel is (disconnected for good), and every caller already handles it: ``ignore_errors`` in the
consumer's clean-up, ``ack_log_error`` for a late acknowledgement, the publish retry in beat and
the web. The messages the channel could not restore stay in Redis' unacked hash and come back
after the visibility timeout, or, on a broker restarted empty, are resent by the saga sweeper.
``config/tests/test_broker.py`` reproduces the failure with kombu's own transport and shows it
fixed with this one; when it stops reproducing with the stock transport, this module can go.
"""

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict:
        transport = self.connection
        if transport is None or transport.client is None:
            raise RedisConnectionError("this broker channel's connection was closed; a new one replaces it")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
