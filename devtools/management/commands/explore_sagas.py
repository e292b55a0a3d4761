"""``manage.py explore_sagas``: the stateful property test of the order saga, run long.

Hypothesis explores ``--examples`` runs of up to ``--steps`` rules each (testing.saga_machine)
and prints the shortest failing run it finds. It runs in a database of its own
(``<database>_explore``, created afresh) and Redis database ``--redis-db`` (emptied first), with
the test settings (fault injection on, short retries); each example rolls back its transaction.
Needs the dev requirements (Hypothesis). Exit code 0 when no example failed.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from devtools.benchmarking import in_bench_child, rerun_isolated


class Command(BaseCommand):
    help = "Explore the order saga with Hypothesis's state machine, long (own database and Redis database)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--examples", type=int, default=200, help="runs of the state machine to try")
        parser.add_argument("--steps", type=int, default=40, help="rules per run, at most")
        parser.add_argument("--seed", type=int, default=None, help="a seed, to explore the same runs again")
        parser.add_argument("--redis-db", type=int, default=12, help="the Redis database to use (it is emptied)")

    def handle(self, *args, examples: int, steps: int, seed: int | None, redis_db: int, **options) -> None:
        if not in_bench_child():
            argv = ["explore_sagas", f"--examples={examples}", f"--steps={steps}", f"--redis-db={redis_db}"]
            if seed is not None:
                argv.append(f"--seed={seed}")
            extra_env = {"DJANGO_SETTINGS_MODULE": "config.settings.test", "LOG_LEVEL": "CRITICAL"}
            raise SystemExit(rerun_isolated(argv, name="explore", redis_db=redis_db, extra_env=extra_env))
        raise SystemExit(self._explore(examples=examples, steps=steps, seed=seed))

    def _explore(self, *, examples: int, steps: int, seed: int | None) -> int:
        import logging

        try:
            from hypothesis import HealthCheck, Phase, settings
            from hypothesis import seed as with_seed
            from hypothesis.stateful import run_state_machine_as_test
        except ImportError:
            raise CommandError("Hypothesis is a dev requirement: pip install -r requirements-dev.txt") from None
        from testing.saga_machine import SagaMachine

        logging.disable(logging.CRITICAL)  # a run logs every handled message; the result is the point
        tried = 0
        stdout = self.stdout

        class Counted(SagaMachine):
            def __init__(self) -> None:
                nonlocal tried
                tried += 1
                if tried % 50 == 0:
                    stdout.write(f"examples_run={tried} seconds={time.monotonic() - started:.0f}")
                super().__init__()

        explore = settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink, Phase.explain],
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        if seed is not None:
            Counted = with_seed(seed)(Counted)
        started = time.monotonic()
        failed = False
        try:
            run_state_machine_as_test(Counted, settings=explore)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a failing example is the report
            failed = True
            self.stderr.write(_describe(exc))
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"examples_run={tried} max_examples={examples} steps={steps} seconds={elapsed:.0f} "
            f"result={'FAILED' if failed else 'passed'}"
        )
        return 1 if failed else 0


def _describe(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
