"""The benchmarks, the chaos harness and explore_sagas, run from a checkout: the development
settings without DEBUG and reachable from loopback only. Each of them runs the system it
measures in processes of its own, with production settings and keys generated for the run;
this process only prepares their databases and reads the results."""

from config.settings.dev import *  # noqa: F403

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
