"""Row locks of the saga engine, always taken in primary-key order so that two
transactions locking several sagas can never deadlock."""

from collections.abc import Iterable

from sagas.models import SagaInstance


def lock_saga(saga_id: object) -> SagaInstance:
    return SagaInstance.objects.select_for_update().get(pk=saga_id)


def lock_sagas(saga_ids: Iterable[object]) -> list[SagaInstance]:
    return list(SagaInstance.objects.select_for_update().filter(pk__in=list(saga_ids)).order_by("pk"))
