"""`portier`: one command to run and operate Portier (installed by pyproject's [project.scripts]).

portier serve [gunicorn options]  the production server: gunicorn with gateway_site/gunicorn.conf.py
                                  and uvicorn workers; options (--bind, --workers, ...) override
                                  the file and its environment variables
portier <command> [options]       a Django management command: migrate, createsuperuser,
                                  loaddemo, audit_purge, check --deploy, ... (as manage.py)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["GUNICORN_CONFIG", "main"]

GUNICORN_CONFIG = Path(__file__).resolve().with_name("gunicorn.conf.py")
APPLICATION = "gateway_site.asgi:application"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(__doc__)
        _manage(["help"])
    elif args[0] == "serve":
        _serve(args[1:])
    else:
        _manage(args)


def _serve(options: list[str]) -> None:
    """gunicorn in this process, not a child: the master must be the process that SIGTERM
    reaches (a container's PID 1) for the graceful shutdown to happen."""
    # gunicorn reads WEB_CONCURRENCY when imported and crashes on an empty one (an env file
    # copied from .env.example): empty means "not set", as for every other setting.
    if not os.environ.get("WEB_CONCURRENCY", "x").strip():
        del os.environ["WEB_CONCURRENCY"]
    from gunicorn.app.wsgiapp import WSGIApplication

    sys.argv = ["portier serve", "--config", str(GUNICORN_CONFIG), *options, APPLICATION]
    WSGIApplication("%(prog)s [OPTIONS]", prog="portier serve").run()


def _manage(args: list[str]) -> None:
    from django.core.management import execute_from_command_line

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_site.settings")
    execute_from_command_line(["portier", *args])


if __name__ == "__main__":
    main()
