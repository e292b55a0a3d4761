"""Celery entry points of the console. Thin: the logic lives in console.bulk_repairs."""

from celery import shared_task

from console.bulk_repairs import bulk_repairs_advance


@shared_task(name="console.advance_bulk_repairs", ignore_result=True)
def advance_bulk_repairs() -> dict[str, int]:
    return bulk_repairs_advance()
