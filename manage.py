#!/usr/bin/env python
"""Django's command-line utility for the order backoffice."""

import os
import sys

LOOPBACK = {"", "127.0.0.1", "localhost", "[::1]", "::1"}
# Developer tools that run the system they measure in processes of their own (production
# settings, keys made for the run): they start with the tooling settings, DEBUG off.
TOOLS = {
    "bench_outbox",
    "bench_saga",
    "bench_api",
    "bench_dashboard",
    "bench_events",
    "bench_machine",
    "chaos",
    "explore_sagas",
}


def default_settings_module(argv: list[str]) -> str:
    """The settings without DJANGO_SETTINGS_MODULE: the development ones (DEBUG on, a public
    key, any host) only for ``runserver`` bound to loopback, where nobody else can reach them;
    production for every other command and address, which refuses to start without its secrets
    rather than run open. The developer tools (TOOLS) get the tooling settings, DEBUG off."""
    if len(argv) > 1 and argv[1] in TOOLS:
        return "config.settings.tooling"
    if len(argv) > 1 and argv[1] == "runserver":
        addrport = next((arg for arg in argv[2:] if not arg.startswith("-")), "")
        host = "" if addrport.isdigit() else addrport.rpartition(":")[0] if ":" in addrport else addrport
        if host in LOOPBACK:
            return "config.settings.dev"
    return "config.settings.production"


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", default_settings_module(sys.argv))
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
