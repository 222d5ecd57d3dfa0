"""Remove what a test left on a broker: its queues (RabbitMQ) or every key naming them (Redis)."""

from __future__ import annotations

from collections.abc import Iterable

from kombu import Connection


def purge_queues(broker_url: str, queues: Iterable[str]) -> None:
    names = list(queues)
    with Connection(broker_url) as conn:
        for q in names:
            try:
                conn.default_channel.queue_delete(q)
            except Exception:
                pass
    if broker_url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(broker_url)
        try:
            for q in names:
                for key in client.scan_iter(match=f"*{q}*"):
                    client.delete(key)
        finally:
            client.close()
