"""`txmon api ...`: serve the scoring API (foreground) and manage its keys. Registered in
infra/cli.py. Every option can also be set as a ``TXMON_API__<NAME>`` variable."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Annotated

import typer

from txmon.infra.errors import TxmonError
from txmon.infra.masking import pii_token_key
from txmon.infra.settings import load_settings
from txmon.webapp.api.config import load_api_settings
from txmon.webapp.api.keys import check_scopes, create_key

api_app = typer.Typer(help="The real-time scoring API (POST /v1/score) and its keys.", invoke_without_command=True)
keys_app = typer.Typer(
    help="API keys: one per client system, with scopes score, read, label, clear.", no_args_is_help=True
)
api_app.add_typer(keys_app, name="keys")


@api_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            envvar="TXMON_API__HOST",
            help="address to listen on (loopback by default; see docs/api.md for TLS before opening it to a network)",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="TXMON_API__PORT", min=1, max=65535, help="port")] = 8300,
    workers: Annotated[
        int,
        typer.Option(
            envvar="TXMON_API__WORKERS",
            min=1,
            max=64,
            help="worker processes (each keeps its own rate buckets and caches)",
        ),
    ] = 1,
    ssl_certfile: Annotated[str | None, typer.Option(help="serve HTTPS with this certificate (PEM)")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option(help="the certificate's private key (PEM)")] = None,
) -> None:
    """Serve the API in the foreground at http://HOST:PORT (OpenAPI docs at /docs).

    Needs Kafka and Cassandra (`txmon infra up`) for everything but /healthz; starts
    without them and answers 503 until they are back. Create a key with
    `txmon api keys create NAME --scope score`.
    """
    if ctx.invoked_subcommand is not None:
        return
    # lazy: uvicorn (222 ms to import); `txmon --help` loads this module without it
    import uvicorn

    settings = load_settings()  # a configuration mistake is one clear line here, not one per worker
    # The key the workers sign page tokens with (webapp/api/services.paging_key): checked, and
    # its file made if it is to be, once here rather than by each worker at its start.
    pii_token_key(settings.state_path)
    # The workers are fresh processes: they read their settings from the environment.
    os.environ.update({"TXMON_API__HOST": host, "TXMON_API__PORT": str(port), "TXMON_API__WORKERS": str(workers)})
    load_api_settings()
    scheme = "https" if ssl_certfile else "http"
    typer.echo(
        f"txmon API on {scheme}://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}); "
        f"docs at {scheme}://{host}:{port}/docs"
    )
    with _shared_metrics_dir(workers):
        uvicorn.run(
            "txmon.webapp.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )


@contextmanager
def _shared_metrics_dir(workers: int):
    """With several workers, an empty directory for their metrics files
    (webapp/api/metrics.py), set in the environment the workers inherit and removed when
    the server stops: a scrape of any worker then counts every worker's requests. One
    worker counts in memory. An operator's own PROMETHEUS_MULTIPROC_DIR is kept as it is
    (prometheus_client asks for it to be emptied before each start)."""
    # lazy: prometheus_client (93 ms to import); `txmon --help` loads this module without it
    from txmon.webapp.api.metrics import MULTIPROCESS_ENV

    if workers < 2 or os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    path = tempfile.mkdtemp(prefix="txmon-api-metrics-")
    os.environ[MULTIPROCESS_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROCESS_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _store():
    # lazy: numpy (512 ms to import); `txmon --help` loads this module without it
    from txmon.webapp.api.store import ApiStore, StoreUnavailable

    settings = load_settings()
    store = ApiStore(settings, timeout_s=10)
    try:
        store.session()
    except StoreUnavailable as exc:
        raise TxmonError(f"{exc}: is Cassandra running (`txmon infra up`)?") from None
    return store


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who the key is for, e.g. payment-switch")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="score, read, label or clear (repeat for several)")],
) -> None:
    """Create a key and print it once (only its hash is stored)."""

    check_scopes(scope)
    store = _store()
    try:
        key, principal = create_key(store, name, scope)
    finally:
        store.close()
    typer.echo(f"key id {principal.key_id} for {name}, scopes {', '.join(sorted(principal.scopes))}")
    typer.echo("store this key now; it cannot be shown again:")
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """Every key: id, name, scopes, created, revoked (never the key)."""
    store = _store()
    try:
        rows = sorted(store.keys(), key=lambda r: (r.created_at is None, r.created_at, r.key_id))
    finally:
        store.close()
    if not rows:
        typer.echo("no API keys; create one with `txmon api keys create NAME --scope score`")
    for r in rows:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        created = f"{r.created_at:%Y-%m-%d %H:%M}" if r.created_at else "-"
        typer.echo(f"{r.key_id}  {r.name:<24} {','.join(sorted(r.scopes or ())):<24} created {created}  {state}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key id (`txmon api keys list`)")]) -> None:
    """Revoke a key: refused by every worker within TXMON_API__KEY_CACHE_S (30 s)."""
    store = _store()
    try:
        found = store.revoke_key(key_id)
    finally:
        store.close()
    if not found:
        raise TxmonError(f"no API key {key_id}; see `txmon api keys list`")
    typer.echo(f"key {key_id} revoked")
