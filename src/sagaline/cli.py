"""`sagaline`: run the system locally, operate sagas, and check the invariants."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvloop

from sagaline import check as checker
from sagaline import demo as demos
from sagaline import pg, stack
from servicekit import tls

app = typer.Typer(help="Sagaline: a distributed saga orchestrator.", no_args_is_help=True, add_completion=False)
saga_app = typer.Typer(help="Start, inspect, retry and cancel sagas through the REST API.", no_args_is_help=True)
app.add_typer(saga_app, name="saga")

UrlOption = Annotated[str, typer.Option("--url", envvar="SAGALINE_URL", help="orchestrator base URL")]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
_SERVICES = {"orchestrator": "orchestrator", "order": "order_service", "payment": "payment_service",
             "inventory": "inventory_service"}  # fmt: skip


PrefixOption = Annotated[
    str, typer.Option("--db-prefix", envvar="SAGALINE_DB_PREFIX", help="prefix of the four database names")
]


def _topology(prefix: str = "") -> stack.Topology:
    url, source = pg.server_url()
    typer.echo(f"postgresql: {source} server", err=True)
    if prefix:
        return stack.Topology(url, databases={d: f"{prefix}_{d}" for d in pg.DATABASES})
    return stack.Topology(url)


CertsOption = Annotated[
    Path | None,
    typer.Option("--certs", envvar=stack.CERTS_DIR_ENV, help="mutual TLS on gRPC with the files `sagaline certs` made"),
]


@app.command()
def up(orchestrators: Annotated[int, typer.Option(min=1, max=8)] = 2, certs: CertsOption = None) -> None:
    """Find or start PostgreSQL, migrate, seed, and run 3 services + N orchestrators until Ctrl-C."""
    if certs is not None and not (certs / "ca.crt").is_file():
        raise typer.BadParameter(f"{certs} holds no ca.crt: run `sagaline certs {certs}` first", param_hint="--certs")
    topology = _topology()
    topology.orchestrator_ports = [8080 + i for i in range(orchestrators)]
    topology.debug_ports = [6060 + i for i in range(orchestrators)]
    uvloop.run(_up(topology, certs))


async def _up(topology: stack.Topology, certs: Path | None) -> None:
    await stack.prepare(topology)
    supervisor = stack.Supervisor(topology, extra_env={stack.CERTS_DIR_ENV: str(certs)} if certs else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await supervisor.start()
    urls = ", ".join(topology.orchestrator_url(i) for i in range(len(topology.orchestrator_ports)))
    typer.echo(f"sagaline is up: REST on {urls} (Swagger UI at /docs); Ctrl-C stops everything")
    await stop.wait()
    codes = await supervisor.stop()
    raise typer.Exit(0 if all(c == 0 for c in codes.values()) else 1)


@app.command()
def certs(
    directory: Annotated[Path, typer.Argument(help="where the certificates, keys and ca.crt go")],
    ca_dir: Annotated[Path | None, typer.Option(help="where the CA key is kept (default: DIRECTORY)")] = None,
    new_ca: Annotated[bool, typer.Option(help="replace the CA: certificates it signed stop being trusted")] = False,
    san: Annotated[list[str] | None, typer.Option(help="one more name for every server certificate")] = None,
    days: Annotated[int, typer.Option(min=1, max=3650, help="validity of the issued certificates")] = 365,
) -> None:
    """Make a development CA, a server certificate per participant and the orchestrators' client certificate.

    An existing CA is reused (run again to rotate the certificates without changing trust); keys are 0600.
    """
    authority_dir = ca_dir or directory
    try:
        authority = tls.Issued(authority_dir / "ca.crt", authority_dir / "ca.key")
        if new_ca or not (authority.cert.is_file() and authority.key.is_file()):
            authority = tls.create_authority(authority_dir, "Sagaline development CA")
            typer.echo(f"created CA {authority.cert} (key {authority.key})")
        else:
            typer.echo(f"reusing CA {authority.cert}")
        if authority_dir.resolve() != directory.resolve():
            tls.publish(authority.cert, directory / "ca.crt")
        issued = [tls.issue(authority, directory, s, "server", ["localhost", "127.0.0.1", *(san or [])], days)
                  for s in stack.SERVICES]  # fmt: skip
        issued.append(tls.issue(authority, directory, stack.CLIENT_CERT, "client", days=days))
    except (tls.PkiError, OSError) as exc:
        typer.echo(f"certs: {exc}", err=True)
        raise typer.Exit(1) from exc
    for item in issued:
        typer.echo(f"issued {item.cert} (key {item.key})")
    typer.echo(f"use: sagaline up --certs {directory}, or the SAGALINE_*TLS__* variables (docs/security.md)")


@app.command()
def migrate() -> None:
    """Create the four databases if missing and apply every migration."""
    uvloop.run(stack.prepare(_topology(), seed=False))


@app.command()
def seed() -> None:
    """Create, migrate and seed the demo customers and SKUs (idempotent), printing them."""
    uvloop.run(stack.prepare(_topology()))


@app.command()
def serve(service: Annotated[str, typer.Argument(help="orchestrator | order | payment | inventory")]) -> None:
    """Run one process in the foreground (configured by SAGALINE_* variables)."""
    if service not in _SERVICES:
        raise typer.BadParameter(f"choose one of {', '.join(_SERVICES)}")
    os.execv(sys.executable, [sys.executable, "-m", _SERVICES[service]])  # noqa: S606 - replaces this process


@app.command()
def check(
    stuck_after: Annotated[float, typer.Option(help="seconds past the deadline a live saga may take")] = 75.0,
    prefix: PrefixOption = "",
) -> None:
    """Check the invariants of SPEC section 8 against the four databases; exit 1 on any violation."""
    topology = _topology(prefix)
    urls = {role: topology.url(role) for role in pg.DATABASES}
    report = uvloop.run(checker.run(urls, stuck_after))
    typer.echo(checker.render(report))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def demo(url: UrlOption = "http://127.0.0.1:8080", prefix: PrefixOption = "") -> None:
    """Against a running stack: one saga of each outcome, then a table of outcomes and participant state."""
    results = []
    with _client(url) as client:
        for name, customer, sku, price, deadline in demos.CASES:
            results.append((name, demos.run_case(client, customer, sku, price, deadline)))
    topology = _topology(prefix)
    state = uvloop.run(demos.participant_state(topology, [saga["id"] for _, saga in results]))
    typer.echo(demos.table(results, state))


def _client(url: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if (key := os.environ.get("SAGALINE_API_KEY")) else {}
    return httpx.Client(base_url=url, headers=headers, timeout=10.0)


def _answer(response: httpx.Response, as_json: bool) -> Any:
    body = response.json()
    if response.status_code >= 400:
        typer.echo(f"error {response.status_code}: {body.get('title')}: {body.get('detail')}", err=True)
        for problem in body.get("errors", []):
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
    return body


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _show_saga(saga: dict[str, Any]) -> None:
    typer.echo(f"saga {saga['id']}  {saga['saga_type']} v{saga['definition_version']}  {saga['status']}")
    if saga.get("error"):
        typer.echo(f"reason: {saga['error']}")
    rows = [["#", "step", "status", "attempts", "comp.attempts", "last error"]]
    for s in saga.get("steps", []):
        rows.append([str(s["position"] + 1), s["name"], s["status"], str(s["attempts"]),
                     str(s["compensation_attempts"]), (s["last_error"] or "")[:60]])  # fmt: skip
    typer.echo(_table(rows))


@saga_app.command("start")
def saga_start(
    payload: Annotated[str, typer.Argument(help="the payload as JSON")],
    saga_type: Annotated[str, typer.Option("--type")] = "order_saga",
    key: Annotated[str | None, typer.Option("--key", help="Idempotency-Key (default: random)")] = None,
    url: UrlOption = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """Start a saga."""
    try:
        body = {"saga_type": saga_type, "payload": json.loads(payload)}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"payload is not JSON: {exc}") from exc
    with _client(url) as client:
        response = client.post("/v1/sagas", json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})
    saga = _answer(response, as_json)
    if not as_json:
        _show_saga(saga)


@saga_app.command("show")
def saga_show(saga_id: str, url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False) -> None:
    """Show a saga, its steps and its history."""
    with _client(url) as client:
        saga = _answer(client.get(f"/v1/sagas/{saga_id}"), as_json)
    if not as_json:
        _show_saga(saga)
        for e in saga["events"]:
            change = f"{e['from_status'] or ''} -> {e['to_status']}" if e["to_status"] else json.dumps(e["detail"])
            typer.echo(f"  {e['at']}  fence {e['fence']}  {e['kind']:<16} {e['step'] or '':<18} {change}")


@saga_app.command("list")
def saga_list(
    status: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    url: UrlOption = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """List sagas, newest first."""
    params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
    with _client(url) as client:
        page = _answer(client.get("/v1/sagas", params=params), as_json)
    if not as_json:
        rows = [["id", "type", "status", "created", "error"]]
        rows += [
            [s["id"], s["saga_type"], s["status"], s["created_at"], (s["error"] or "")[:50]] for s in page["items"]
        ]
        typer.echo(_table(rows))


@saga_app.command("retry")
def saga_retry(saga_id: str, url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False) -> None:
    """Resume the compensation of a FAILED saga (admin)."""
    with _client(url) as client:
        saga = _answer(client.post(f"/v1/sagas/{saga_id}/retry"), as_json)
    if not as_json:
        _show_saga(saga)


@saga_app.command("cancel")
def saga_cancel(saga_id: str, url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False) -> None:
    """Stop a running saga and compensate it (admin)."""
    with _client(url) as client:
        saga = _answer(client.post(f"/v1/sagas/{saga_id}/cancel"), as_json)
    if not as_json:
        _show_saga(saga)
