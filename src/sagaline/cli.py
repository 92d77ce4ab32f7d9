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


ListenOption = Annotated[
    str,
    typer.Option("--listen", help="address the orchestrators' REST binds (0.0.0.0 in a container; auth must be on)"),
]
PortOption = Annotated[int, typer.Option("--port", min=1, max=65535, help="REST port of orchestrator 1 (N: port+N-1)")]


@app.command()
def up(
    orchestrators: Annotated[int, typer.Option(min=1, max=8)] = 2,
    certs: CertsOption = None,
    listen: ListenOption = "127.0.0.1",
    port: PortOption = 8080,
) -> None:
    """Find or start PostgreSQL, migrate, seed, and run 3 services + N orchestrators until Ctrl-C."""
    if certs is not None and not (certs / "ca.crt").is_file():
        raise typer.BadParameter(f"{certs} holds no ca.crt: run `sagaline certs {certs}` first", param_hint="--certs")
    topology = _topology()
    topology.listen_host = listen
    topology.orchestrator_ports = [port + i for i in range(orchestrators)]
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
    typer.echo(f"sagaline is up: REST on {urls} (sagas at /ui, Swagger UI at /docs); Ctrl-C stops everything")
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
def saga_retry(
    saga_id: str,
    reason: Annotated[str | None, typer.Option("--reason", help="why (recorded with your key's name)")] = None,
    url: UrlOption = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """Resume the compensation of a FAILED saga, or its confirmation past the point of no return (admin)."""
    with _client(url) as client:
        saga = _answer(client.post(f"/v1/sagas/{saga_id}/retry", json={"reason": reason} if reason else None), as_json)
    if not as_json:
        _show_saga(saga)


@saga_app.command("cancel")
def saga_cancel(saga_id: str, url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False) -> None:
    """Stop a running saga and compensate it (admin)."""
    with _client(url) as client:
        saga = _answer(client.post(f"/v1/sagas/{saga_id}/cancel"), as_json)
    if not as_json:
        _show_saga(saga)


# -- the queue: what needs a person (admin), the dry run, the export ----------------------------------------

ReasonOption = Annotated[
    str, typer.Option("--reason", help="why you act; recorded in the saga's history with your API key's name")
]


def _json_argument(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{what} is not JSON: {exc}") from exc


def _act(saga_id: str, action: str, body: dict[str, Any], url: str, as_json: bool) -> None:
    with _client(url) as client:
        saga = _answer(client.post(f"/v1/sagas/{saga_id}/{action}", json=body), as_json)
    if not as_json:
        _show_saga(saga)


@saga_app.command("queue")
def saga_queue(url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False) -> None:
    """The FAILED sagas no person has resolved yet, newest first: what needs a person."""
    waiting: list[dict[str, Any]] = []
    params: dict[str, Any] = {"status": "FAILED", "limit": 100}
    with _client(url) as client:
        while True:
            page = _answer(client.get("/v1/sagas", params=params), False)
            waiting += [s for s in page["items"] if s.get("resolution") is None]
            if not page["next_cursor"]:
                break
            params["cursor"] = page["next_cursor"]
    if as_json:
        typer.echo(json.dumps(waiting, indent=2))
        return
    rows = [["id", "type", "failed at", "reason"]]
    rows += [[s["id"], s["saga_type"], s["finished_at"] or "", (s["error"] or "")[:70]] for s in waiting]
    typer.echo(_table(rows) if waiting else "the queue is empty: no FAILED saga waits for a person")


@saga_app.command("retry-payload")
def saga_retry_payload(
    saga_id: str,
    payload: Annotated[str, typer.Option("--payload", help="the corrected payload as JSON")],
    reason: ReasonOption,
    url: UrlOption = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """Resume a saga that failed going forward, from its stuck step, with a corrected payload (admin)."""
    _act(saga_id, "retry-with-payload", {"payload": _json_argument(payload, "--payload"), "reason": reason}, url,
         as_json)  # fmt: skip


@saga_app.command("skip")
def saga_skip(
    saga_id: str,
    step: Annotated[str, typer.Argument(help="the step the saga is stuck at")],
    reason: ReasonOption,
    output: Annotated[str, typer.Option("--output", help="what the step produced, done by hand, as JSON")] = "{}",
    url: UrlOption = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """Mark the stuck step done by hand, with its output; the saga goes on (admin)."""
    body = {"step": step, "output": _json_argument(output, "--output"), "reason": reason}
    _act(saga_id, "skip-step", body, url, as_json)


@saga_app.command("compensate")
def saga_compensate(
    saga_id: str, reason: ReasonOption, url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False
) -> None:
    """Force the compensation of a FAILED saga; refused past the point of no return (admin)."""
    _act(saga_id, "compensate", {"reason": reason}, url, as_json)


@saga_app.command("resolve")
def saga_resolve(
    saga_id: str, reason: ReasonOption, url: UrlOption = "http://127.0.0.1:8080", as_json: JsonOption = False
) -> None:
    """Mark a FAILED saga handled without acting; it leaves the queue (admin)."""
    _act(saga_id, "resolve", {"reason": reason}, url, as_json)


@saga_app.command("plan")
def saga_plan(
    saga_type: Annotated[str, typer.Argument(help="the saga type, e.g. order_saga")],
    payload: Annotated[str, typer.Option("--payload", help="the payload as JSON")],
    deadline: Annotated[str | None, typer.Option("--deadline", help="a deadline such as 30s")] = None,
    url: UrlOption = "http://127.0.0.1:8080",
    as_json: JsonOption = False,
) -> None:
    """Dry run: the steps, their timeouts and retries, and what a failure at each step would undo."""
    body: dict[str, Any] = {"payload": _json_argument(payload, "--payload")}
    if deadline:
        body["deadline"] = deadline
    with _client(url) as client:
        plan = _answer(client.post(f"/v1/saga-types/{saga_type}/plan", json=body), as_json)
    if not as_json:
        typer.echo(render_plan(plan))


def _schedule(retry: dict[str, Any]) -> str:
    delays = ", ".join(f"{d['delay_seconds']:g}s" for d in retry["schedule"])
    jitter = f" (±{retry['jitter'] * 100:g}%)"
    if retry["max_retries"] is None:
        return f"until it succeeds: {delays}, then every {retry['then_repeats']['delay_seconds']:g}s{jitter}"
    return f"{retry['max_retries']} retries: {delays}{jitter}" if retry["schedule"] else "no retries"


def render_plan(plan: dict[str, Any]) -> str:
    """The dry run as text: the steps, then what a failure at each position would run."""
    lines = [f"plan of {plan['saga_type']} v{plan['definition_version']}: deadline {plan['deadline_seconds']:g}s, "
             f"on timeout {plan['on_timeout']}; nothing was written or called", ""]  # fmt: skip
    rows = [["#", "step", "action", "timeout", "retries", "compensation"]]
    for step in plan["steps"]:
        action, undo = step["action"], step["compensation"]
        rows.append([str(step["position"] + 1), step["name"], f"{action['service']}.{action['method']}",
                     f"{action['timeout_seconds']:g}s", _schedule(action["retry"]),
                     f"{undo['service']}.{undo['method']} ({undo['timeout_seconds']:g}s)" if undo
                     else "none: the point of no return"])  # fmt: skip
    lines += [_table(rows), "", "if a step fails:"]
    for failure in plan["failures"]:
        refused = ", ".join(c["method"] for c in failure["if_refused"]) or "nothing to undo"
        unknown = (
            "retried until it succeeds"
            if failure["if_unknown"] is None
            else f"after {failure['unknown_after_attempts']} attempts, the same compensations"
        )
        lines.append(f"  {failure['step']}: refused -> {refused}; outcome unknown -> {unknown}")
    return "\n".join(lines)


@saga_app.command("export")
def saga_export(
    saga_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="write here instead of stdout")] = None,
    url: UrlOption = "http://127.0.0.1:8080",
) -> None:
    """Write one saga's whole history (steps with requests and answers, every event) as JSON."""
    with _client(url) as client:
        history = _answer(client.get(f"/v1/sagas/{saga_id}/history"), False)
    text = json.dumps(history, indent=2, sort_keys=True)
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"wrote the history of saga {saga_id} to {output}", err=True)
