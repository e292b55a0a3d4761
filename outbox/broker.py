"""Putting consume tasks on the broker: the relay's last hop.

On the Redis transport a Celery task message is one JSON document pushed onto a list named
after its queue. Celery's ``send_task`` spends most of its time on work that is the same for
every message (routing, declaring the queue, option look-ups): at thousands of messages a
second that, not Redis, is what limits the relay. So on Redis the relay writes the very
document Celery's producer writes (task protocol 2, as a test compares field by field),
a whole batch in one pipeline. On RabbitMQ it publishes the same message (``task_message``, the
one source of both) through kombu, a batch at a time with publisher confirms
(outbox.rabbitmq). On any other broker it goes through ``send_task``.

Both ways every envelope is signed here, on its way out (outbox.signing): this is the one
place where messages leave for the broker, so none can leave unsigned.

Everything the outbox sends goes through ``send()``. With settings.FAULT_INJECTION on (tests,
the chaos harness), ``settings.OUTBOX_BROKER_WRAPPER`` names a wrapper of this broker that
misbehaves on purpose (devtools.faults.FaultyBroker: duplicates, reordering); production never
installs one.
"""

import base64
import json
import os
import socket
import uuid
from collections.abc import Iterable
from functools import cache
from typing import Protocol
from urllib.parse import urlsplit

from celery import current_app as celery_app
from django.conf import settings
from django.utils.module_loading import import_string
from redis import Redis

from outbox.signing import signed, signed_json

CONSUME_TASK = "outbox.consume"
# The part of a task's body that names no callbacks: what Celery writes for a plain task.
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMBED_JSON = json.dumps(_EMBED)


class Broker(Protocol):
    def send(self, envelopes: list[dict]) -> None:
        """Queue one consume task per envelope; raises when the broker cannot be reached."""

    def allows_delivery_in_process(self) -> bool:
        """Whether a message may skip the broker and be handled in the process that committed
        it (a broker that injects faults wants every message to go through it)."""


class _Broker:
    def send(self, envelopes: list[dict]) -> None:
        send_consume_tasks(envelopes)

    def allows_delivery_in_process(self) -> bool:
        return True


@cache
def installed() -> Broker:
    """The broker the outbox sends through: this module's, or the wrapper the settings name."""
    wrapper = settings.OUTBOX_BROKER_WRAPPER if settings.FAULT_INJECTION else ""
    return import_string(wrapper)(_Broker()) if wrapper else _Broker()


def send(envelopes: list[dict]) -> None:
    installed().send(envelopes)


def allows_delivery_in_process() -> bool:
    return installed().allows_delivery_in_process()


def send_consume_tasks(envelopes: Iterable[dict]) -> None:
    """Queue one ``outbox.consume`` task per envelope, signed, on its destination's queue, with
    the message id as the task id. Raises when the broker cannot be reached (or, on RabbitMQ, did
    not confirm every message): nothing is then marked published, and the relay sends the
    messages again later."""
    if _broker_scheme() in AMQP_SCHEMES:
        from outbox import rabbitmq

        rabbitmq.publish_confirmed(list(envelopes))
        return
    client = _redis_broker()
    if client is None:
        _send_through_celery(envelopes)
        return
    redis, prefix = client
    sender = task_sender()
    pipeline = redis.pipeline(transaction=False)
    for envelope in envelopes:
        queue = envelope["destination"]
        pipeline.lpush(prefix + queue, json.dumps(task_document(envelope, queue=queue, **sender)))
    pipeline.execute()


def task_sender() -> dict:
    """What every message of this process says of its sender, for ``task_message``."""
    conf = celery_app.conf
    return {
        "origin": f"gen{os.getpid()}@{socket.gethostname()}",
        "reply_to": celery_app.thread_oid,
        # What Celery takes from the registered task, whose limits are the configured ones.
        "time_limits": [conf.task_time_limit, conf.task_soft_time_limit],
    }


def task_message(envelope: dict, *, origin: str, reply_to: str, time_limits: list) -> tuple[bytes, dict, dict]:
    """A Celery protocol 2 message running ``outbox.consume`` with the signed envelope as its
    only argument: its JSON body, its headers and its properties, whatever the transport."""
    task_id = envelope["message_id"]
    # The envelope's canonical JSON, which its signature needed anyway, is the argument's text.
    body = f"[[{signed_json(envelope)}], {{}}, {_EMBED_JSON}]".encode()
    headers = {
        "lang": "py",
        "task": CONSUME_TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": time_limits,
        "root_id": task_id,
        "parent_id": None,
        # The envelope is logged by the consumer; a repr per message is waste.
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": origin,
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {"correlation_id": task_id, "reply_to": reply_to, "delivery_mode": 2, "priority": 0}
    return body, headers, properties


def task_document(envelope: dict, *, queue: str, origin: str, reply_to: str, time_limits: list) -> dict:
    """The Redis transport's document of ``task_message``."""
    body, headers, properties = task_message(envelope, origin=origin, reply_to=reply_to, time_limits=time_limits)
    return {
        "body": base64.b64encode(body).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": properties["correlation_id"],
            "reply_to": properties["reply_to"],
            # Celery hands the reprs to kombu as properties too; the Redis transport keeps them.
            "argsrepr": "",
            "kwargsrepr": "",
            "delivery_mode": properties["delivery_mode"],
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": properties["priority"],
            "body_encoding": "base64",
            # The transport's handle for acknowledging the message, unique per copy sent.
            "delivery_tag": str(uuid.uuid4()),
        },
    }


def _send_through_celery(envelopes: Iterable[dict]) -> None:
    with celery_app.producer_or_acquire() as producer:
        for envelope in envelopes:
            celery_app.send_task(
                CONSUME_TASK,
                args=[signed(envelope)],
                task_id=envelope["message_id"],
                queue=envelope["destination"],
                producer=producer,
                argsrepr="",
                kwargsrepr="",
            )


AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")


def broker_countdown(seconds: float) -> float:
    """A delay the broker can keep. On RabbitMQ's quorum queues Celery delays a message through
    its delayed-delivery exchanges by whole seconds and refuses less than one (kombu's
    calculate_routing_key raises); a fraction left over is waited by the worker (the ETA)."""
    if _broker_scheme() in AMQP_SCHEMES:
        return max(seconds, 1.0)
    return seconds


def _broker_scheme() -> str:
    return urlsplit(celery_app.conf.broker_url or "").scheme


@cache
def _redis_broker() -> tuple[Redis, str] | None:
    """The broker's Redis client and key prefix, or None when the broker is not Redis.
    redis-py's pool notices a fork and reconnects, so one client per process is safe."""
    url = celery_app.conf.broker_url or ""
    if urlsplit(url).scheme not in ("redis", "rediss"):
        return None
    options = celery_app.conf.broker_transport_options or {}
    if options.get("priority_steps") or options.get("sep"):
        return None  # a custom priority layout: leave the queue naming to kombu
    return Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5), options.get("global_keyprefix", "")
