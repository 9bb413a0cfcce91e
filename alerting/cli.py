"""`txmon alerts ...` commands (dispatcher, digest). Registered in infra/cli.py."""
from __future__ import annotations

import typer

alerts_app = typer.Typer(help="Alert dispatch to bank staff and customers: email, SMS, webhook.",
                         no_args_is_help=True)
