from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """The launcher, benchmarks, chaos harness and their management commands; installed by the
    development and test settings only."""

    name = "devtools"
    verbose_name = "Developer tools"
