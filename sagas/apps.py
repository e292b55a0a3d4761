from django.apps import AppConfig


class SagasConfig(AppConfig):
    name = "sagas"
    verbose_name = "Sagas"

    def ready(self) -> None:
        from sagas import handlers  # noqa: F401  registers the orchestrator's reply handler
