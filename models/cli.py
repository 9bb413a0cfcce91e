"""`txmon train`, `txmon evaluate`, `txmon models ...` commands. Registered in infra/cli.py."""
from __future__ import annotations

import typer

models_app = typer.Typer(help="Model registry: list versions, promote, roll back.", no_args_is_help=True)
