"""``modelport versions ...``: list, pin, canary, shadow, promote, roll back — via the admin API.

The server must run with ``--admin --auth-token TOKEN``; these commands send the token as a
bearer token (``--token``, or ``MODELPORT_AUTH_TOKEN`` as the server reads it).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    import urllib.error

versions_app = typer.Typer(
    name="versions",
    help="Model versions on a running server: list, pin, canary, shadow, promote, rollback.",
    no_args_is_help=True,
)

URL = typer.Option(
    "http://127.0.0.1:8080", "--url", envvar="MODELPORT_URL", help="The server's HTTP address."
)
TOKEN = typer.Option(
    None,
    "--token",
    envvar="MODELPORT_AUTH_TOKEN",
    help="The server's auth token (its --auth-token).",
    show_default=False,
)
JSON = typer.Option(False, "--json", help="Print the server's JSON answer.")
NAME = typer.Argument(..., help="The model's name.", show_default=False)
VERSION = typer.Argument(..., help="The version, e.g. 3.", show_default=False)


def register(app: typer.Typer) -> None:
    app.add_typer(versions_app)


def call(url: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    """One admin API call; a refusal or an unreachable server exits with its reason."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        _fail(_http_error(exc, path))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _fail(f"cannot reach {url}: {reason}")


def _http_error(exc: urllib.error.HTTPError, path: str) -> str:
    try:
        message = json.loads(exc.read()).get("error", "")
    except (ValueError, AttributeError):
        message = ""
    if exc.code == 404 and not message.startswith(("unknown model", "model ")):
        return (
            f"{exc.code} on {path}: the admin API is off on this server (start it with "
            f"--admin --auth-token TOKEN){': ' + message if message else ''}"
        )
    if exc.code == 401:
        return f"401: {message or 'unauthorized'}; pass the server's token with --token"
    return f"{exc.code}: {message or exc.reason}"


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _show(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(state, indent=2))
        return
    policy = state.get("policy")
    line = f"{state['name']}: live {state['live'] or '-'}"
    if state.get("pinned"):
        line += " (pinned)"
    if policy:
        line += f", {policy['kind']} {policy['version']}"
        if policy["kind"] == "canary":
            line += f" at {policy['percent']:g} %"
    typer.echo(line)
    shadow = state.get("shadow")
    if shadow:
        agreement = shadow["agreement"]
        typer.echo(
            f"  shadow: {shadow['mirrored']} mirrored, agreement "
            f"{'-' if agreement is None else f'{agreement:.1%}'}, {shadow['errors']} errors, "
            f"{shadow['dropped']} dropped"
        )
    for row in state["versions"]:
        error = f"  {row['error']}" if row.get("error") else ""
        typer.echo(f"  {row['version']:>8}  {row['state']:<10} {row['role'] or '':<7}{error}")


def _path(name: str, action: str = "") -> str:
    import urllib.parse

    quoted = urllib.parse.quote(name, safe="")
    return f"/admin/models/{quoted}" + (f"/{action}" if action else "")


@versions_app.command("list")
def list_versions(
    name: str | None = typer.Argument(None, help="Only this model.", show_default=False),
    url: str = URL,
    token: str | None = TOKEN,
    as_json: bool = JSON,
) -> None:
    """List each model's versions: live, pinned, candidate, failed."""
    if name is not None:
        _show(call(url, token, "GET", _path(name)), as_json)
        return
    models = call(url, token, "GET", "/admin/models")["models"]
    if as_json:
        typer.echo(json.dumps(models, indent=2))
        return
    for state in models:
        _show(state, False)


@versions_app.command()
def pin(
    name: str = NAME, version: str = VERSION, url: str = URL, token: str | None = TOKEN
) -> None:
    """Make VERSION live and keep it there: new versions wait until promoted or unpinned."""
    _show(call(url, token, "POST", _path(name, "pin"), {"version": version}), False)


@versions_app.command()
def unpin(name: str = NAME, url: str = URL, token: str | None = TOKEN) -> None:
    """Let new versions go live again as they appear."""
    _show(call(url, token, "POST", _path(name, "unpin"), {}), False)


@versions_app.command()
def canary(
    name: str = NAME,
    version: str = VERSION,
    percent: float = typer.Option(..., "--percent", help="Share of requests, in (0, 100]."),
    url: str = URL,
    token: str | None = TOKEN,
) -> None:
    """Send PERCENT % of the requests to VERSION (loaded and warmed up first)."""
    body = {"version": version, "percent": percent}
    _show(call(url, token, "POST", _path(name, "canary"), body), False)


@versions_app.command()
def shadow(
    name: str = NAME, version: str = VERSION, url: str = URL, token: str | None = TOKEN
) -> None:
    """Mirror every request to VERSION and compare; callers only see the live version."""
    _show(call(url, token, "POST", _path(name, "shadow"), {"version": version}), False)


@versions_app.command()
def promote(name: str = NAME, url: str = URL, token: str | None = TOKEN) -> None:
    """Make the canary or shadow version live."""
    _show(call(url, token, "POST", _path(name, "promote"), {}), False)


@versions_app.command()
def clear(name: str = NAME, url: str = URL, token: str | None = TOKEN) -> None:
    """Drop the canary or shadow and unload its version."""
    _show(call(url, token, "POST", _path(name, "clear"), {}), False)


@versions_app.command()
def rollback(name: str = NAME, url: str = URL, token: str | None = TOKEN) -> None:
    """Drop any candidate and go back to the version live before this one (and pin it)."""
    _show(call(url, token, "POST", _path(name, "rollback"), {}), False)
