from django.apps import AppConfig


class ShippingConfig(AppConfig):
    name = "shipping"
    verbose_name = "Shipping"

    def ready(self) -> None:
        from shipping import handlers  # noqa: F401  registers the message handlers
