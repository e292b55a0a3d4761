"""What the benchmarks and the chaos harness measure: the production settings, with the
developer tools installed so that the measuring command itself can run under them. Nothing
else differs; a deployment never uses this module."""

from config.settings.production import *  # noqa: F403
from config.settings.production import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "devtools"]
