"""The command line: argument parsing, wiring, one small function per command, the one error handler.

Exit codes: 0 success; 1 any error, usage errors included; 2 only for ``plan --detailed-exitcode``
when the plan has changes. What each command does lives in ``operations``, text in ``render``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from invoicesync import __version__, operations, views
from invoicesync.config import Settings, load_settings
from invoicesync.errors import InvoiceSyncError, NotFoundError, SpecError, SpecErrors, UsageError
from invoicesync.models import dumps_json
from invoicesync.plan import Plan, address_order, has_changes, load_plan, save_plan
from invoicesync.render import render_apply_result, render_plan, render_show
from invoicesync.specs import SpecSet, load_specs

F = TypeVar("F", bound=Callable[..., Any])


# --- shared wiring -------------------------------------------------------------------------------------


@dataclass
class Options:
    """The flags every workspace command takes."""

    directory: Path | None
    env: str | None
    var: tuple[str, ...]
    var_file: tuple[Path, ...]
    json: bool
    no_color: bool

    def settings(self) -> Settings:
        """The workspace settings these flags select."""
        return load_settings(self.directory, environment=self.env)

    def specs(self, settings: Settings) -> SpecSet:
        """Every spec of the workspace, rendered and validated."""
        return load_specs(settings, var_files=self.var_file, cli_vars=self.var)

    @property
    def color(self) -> bool:
        """Colour only on a terminal, and never with --no-color or NO_COLOR."""
        return not self.no_color and "NO_COLOR" not in os.environ and sys.stdout.isatty()


def common_options(func: F) -> F:
    """-e/--env, --var, --var-file, --json, --no-color."""
    decorators = [
        click.option("-e", "--env", "env", metavar="NAME", help="Environment from the workspace config."),
        click.option("--var", "var", multiple=True, metavar="KEY=VALUE", help="Template variable (a YAML scalar); repeatable."),
        click.option(
            "--var-file", "var_file", multiple=True, metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path), help="YAML file of template variables; repeatable.",
        ),
        click.option("--json", "json_", is_flag=True, help="Machine-readable output on stdout."),
        click.option("--no-color", is_flag=True, help="No colour (also NO_COLOR)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _options(ctx: click.Context, /, env: str | None, var: tuple[str, ...], var_file: tuple[Path, ...], json_: bool, no_color: bool) -> Options:
    obj = ctx.obj or {}
    return Options(directory=obj.get("directory"), env=_environment(obj, env), var=(*obj.get("var", ()), *var),
                   var_file=(*obj.get("var_file", ()), *var_file), json=json_, no_color=no_color)


def _environment(obj: dict[str, Any], env: str | None) -> str | None:
    """-e given after the command, else before it (as in `invoicesync -e production plan`); both must agree."""
    before = obj.get("env")
    if before and env and before != env:
        raise click.UsageError(f"two environments given: -e {before} before the command and -e {env} after it")
    return env or before


def _lock_timeout(value: float | None) -> float | None:
    return value if value and value > 0 else None


# --- the command tree ------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-C", "directory", type=click.Path(file_okay=False, path_type=Path), metavar="DIR", help="Run in workspace DIR.")
@click.option("-e", "--env", "env", metavar="NAME", help="Environment from the workspace config (before or after the command).")
@click.option("--var", "var", multiple=True, metavar="KEY=VALUE", help="Template variable; repeatable (before or after the command).")
@click.option("--var-file", "var_file", multiple=True, metavar="FILE", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML file of template variables; repeatable (before or after the command).")
@click.version_option(__version__, prog_name="invoicesync")
@click.pass_context
def cli(ctx: click.Context, /, directory: Path | None, env: str | None, var: tuple[str, ...],
        var_file: tuple[Path, ...]) -> None:
    """Terraform for Campfire invoices: declare them in specs, plan, apply exactly once."""
    ctx.obj = {"directory": directory, "env": env, "var": var, "var_file": var_file}


@cli.command()
@common_options
@click.pass_context
def validate(ctx: click.Context, /, **kw: Any) -> int:
    """Render and validate every spec (no network, no state)."""
    opts = _options(ctx, **kw)
    try:
        settings = opts.settings()
        specs = opts.specs(settings)
    except InvoiceSyncError as exc:
        if opts.json:  # the diagnostics on stdout for CI, the usual message on stderr
            views.echo(dumps_json({"valid": False, "errors": _diagnostics(exc)}, pretty=True))
        raise
    if opts.json:
        views.echo(dumps_json({"valid": True, "invoices": len(specs.invoices), "files": list(specs.files)}, pretty=True))
    else:
        n, f = len(specs.invoices), len(specs.files)
        views.echo(f"Valid: {n} invoice{'s' if n != 1 else ''} in {f} spec file{'s' if f != 1 else ''}.")
    return 0


def _diagnostics(exc: InvoiceSyncError) -> list[dict[str, Any]]:
    """Each problem as a JSON object: file, line, address, field, message (None where not known)."""
    errors = exc.errors if isinstance(exc, SpecErrors) else [exc] if isinstance(exc, SpecError) else []
    if not errors:
        return [{"file": None, "line": None, "address": None, "field": None, "message": str(exc)}]
    return [{"file": e.where.file, "line": e.where.line, "address": e.address, "field": e.field, "message": e.problem}
            for e in errors]


PARALLELISM_OPTION = click.option(
    "--parallelism", type=click.IntRange(1, 256), default=8, show_default=True, help="Concurrent requests."
)
LOCK_TIMEOUT_OPTION = click.option(
    "--lock-timeout", type=click.FloatRange(0), default=0, metavar="SECONDS", help="Wait this long for the state lock."
)


def _plan_flags(func: F) -> F:
    decorators = [
        click.option("--refresh", "refresh_", type=click.BOOL, default=True, show_default=True, metavar="BOOL",
                     help="Read managed invoices back from Campfire first (--refresh=false to skip)."),
        PARALLELISM_OPTION,
        click.option("--target", "targets", multiple=True, metavar="ADDRESS", help="Only these addresses (globs); repeatable."),
        click.option("--replace", "replace", multiple=True, metavar="ADDRESS", help="Void and create anew (globs); repeatable."),
        LOCK_TIMEOUT_OPTION,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


@cli.command("plan")
@common_options
@_plan_flags
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="Save the plan for `apply FILE`.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when the plan has changes, 0 when it has none.")
@click.pass_context
def plan_cmd(ctx: click.Context, /, refresh_: bool, parallelism: int, targets: tuple[str, ...], replace: tuple[str, ...],
             lock_timeout: float, out: Path | None, fmt: str, detailed_exitcode: bool, **kw: Any) -> int:
    """Validate, diff against the state (refreshed from Campfire), print the plan."""
    opts = _options(ctx, **kw)
    settings = opts.settings()
    specs = opts.specs(settings)
    plan = operations.plan(settings, specs, views.hooks(no_color=opts.no_color), refresh=refresh_, parallelism=parallelism,
                           targets=targets, replace=replace, lock_timeout=_lock_timeout(lock_timeout))
    fmt = "json" if opts.json else fmt
    views.echo(render_plan(plan, fmt, color=opts.color and fmt == "text"))  # type: ignore[arg-type]
    if out is not None:
        # Like git -C, paths are relative to the workspace.
        written = settings.root / out
        save_plan(plan, written)
        if fmt == "text":
            views.echo(f"\nSaved the plan to {written}. Apply exactly this plan with: {views.apply_command(opts.directory, opts.env, opts.var, opts.var_file, out)}")
    if detailed_exitcode and has_changes(plan):
        return 2
    return 0


@cli.command("apply")
@click.argument("planfile", required=False, type=click.Path(dir_okay=False, path_type=Path))
@common_options
@_plan_flags
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def apply_cmd(ctx: click.Context, /, planfile: Path | None, refresh_: bool, parallelism: int, targets: tuple[str, ...],
              replace: tuple[str, ...], lock_timeout: float, auto_approve: bool, **kw: Any) -> int:
    """Plan (or load a saved plan), confirm, create/update/remove invoices, record each result."""
    opts = _options(ctx, **kw)
    if planfile is not None:
        flags = {"refresh_": "--refresh", "targets": "--target", "replace": "--replace"}
        given = [flag for name, flag in flags.items()
                 if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if given:
            raise UsageError(
                f"{', '.join(given)} cannot change a saved plan: it is applied exactly as it was made. "
                "Give them to `invoicesync plan --out FILE` instead."
            )
    elif opts.json and not auto_approve:
        raise UsageError("apply --json needs --auto-approve (or a saved plan): a prompt would mix with the JSON output.")
    settings = opts.settings()
    specs = opts.specs(settings)
    saved = load_plan(settings.root / planfile) if planfile is not None else None

    def show_plan(plan: Plan) -> None:
        if not opts.json:
            views.echo(render_plan(plan, "text", color=opts.color))

    hooks = dataclasses.replace(
        views.hooks(no_color=opts.no_color), show_plan=show_plan, confirm=lambda plan: views.confirm(auto_approve),
        progress=lambda plan, settle, rate: views.progress(plan, settle, rate, json=opts.json, no_color=opts.no_color),
    )
    result = operations.apply(settings, specs, hooks, saved=saved, refresh=refresh_, parallelism=parallelism,
                              targets=targets, replace=replace, lock_timeout=_lock_timeout(lock_timeout))
    views.echo(render_apply_result(result, "json" if opts.json else "text", color=opts.color,
                              only_failures=not opts.json and not views.is_terminal(opts.no_color)))
    return 1 if result.failed or result.interrupted else 0


@cli.command()
@click.argument("address", required=False)
@common_options
@click.pass_context
def show(ctx: click.Context, /, address: str | None, **kw: Any) -> int:
    """What the state holds, with money per currency (invoiced, paid, due)."""
    opts = _options(ctx, **kw)
    state = operations.read_state(opts.settings(), views.hooks())
    views.echo(render_show(state, address, "json" if opts.json else "text", color=opts.color))
    return 0


@cli.command("refresh")
@common_options
@PARALLELISM_OPTION
@LOCK_TIMEOUT_OPTION
@click.pass_context
def refresh_cmd(ctx: click.Context, /, parallelism: int, lock_timeout: float, **kw: Any) -> int:
    """Read every managed invoice back and update the state's remote snapshots (changes nothing remote)."""
    opts = _options(ctx, **kw)
    result = operations.refresh(opts.settings(), views.hooks(no_color=opts.no_color), parallelism=parallelism,
                                lock_timeout=_lock_timeout(lock_timeout))
    views.echo(views.refreshed(result, json=opts.json))
    return 0


@cli.command("import")
@click.argument("address")
@click.argument("invoice_id", required=False, type=int)
@click.option("--invoice-number", metavar="N", help="Find the invoice by its number instead of its id.")
@common_options
@LOCK_TIMEOUT_OPTION
@click.pass_context
def import_cmd(ctx: click.Context, /, address: str, invoice_id: int | None, invoice_number: str | None,
               lock_timeout: float, **kw: Any) -> int:
    """Adopt an existing Campfire invoice for an address declared in the specs."""
    if (invoice_id is None) == (invoice_number is None):
        raise UsageError("import takes an invoice ID or --invoice-number N (one of them).")
    opts = _options(ctx, **kw)
    settings = opts.settings()
    specs = opts.specs(settings)
    desired = next((d for d in specs.invoices if d.address == address), None)
    if desired is None:
        raise NotFoundError(f'"{address}" is not declared in the specs: declare it first, then import it.')
    adopted = operations.import_invoice(settings, desired, views.hooks(), invoice_id=invoice_id,
                                        invoice_number=invoice_number, lock_timeout=_lock_timeout(lock_timeout))
    views.echo(f'Imported invoice {adopted} as "{address}". Run `invoicesync plan` to see how it differs from the spec.')
    return 0


@cli.group("state")
def state_group() -> None:
    """State surgery (list, show, rm, mv) without touching Campfire; the state as JSON (pull, push); its history."""


@state_group.command("list")
@common_options
@click.pass_context
def state_list(ctx: click.Context, /, **kw: Any) -> int:
    """Every address the state manages, with its invoice id."""
    opts = _options(ctx.find_root(), **kw)
    state = operations.read_state(opts.settings(), views.hooks())
    if opts.json:
        views.echo(dumps_json({a: r.id for a, r in sorted(state.invoices.items())}, pretty=True))
    else:
        for address, record in sorted(state.invoices.items(), key=lambda item: address_order(item[0])):
            views.echo(f"{address}\t{record.id}")
    return 0


@state_group.command("show")
@click.argument("address")
@common_options
@click.pass_context
def state_show(ctx: click.Context, /, address: str, **kw: Any) -> int:
    """One state record in full."""
    opts = _options(ctx.find_root(), **kw)
    state = operations.read_state(opts.settings(), views.hooks())
    if address not in state.invoices:
        raise NotFoundError(f'the state has no "{address}" (see `invoicesync state list`).')
    views.echo(dumps_json(state.invoices[address].model_dump(), pretty=True))
    return 0


@state_group.command("rm")
@click.argument("addresses", nargs=-1, required=True)
@common_options
@LOCK_TIMEOUT_OPTION
@click.pass_context
def state_rm(ctx: click.Context, /, addresses: tuple[str, ...], lock_timeout: float, **kw: Any) -> int:
    """Forget addresses without touching their invoices in Campfire."""
    opts = _options(ctx.find_root(), **kw)
    operations.state_rm(opts.settings(), addresses, views.hooks(), lock_timeout=_lock_timeout(lock_timeout))
    for address in addresses:
        views.echo(f'Removed "{address}" from the state (its invoice is untouched in Campfire).')
    return 0


@state_group.command("mv")
@click.argument("old")
@click.argument("new")
@common_options
@LOCK_TIMEOUT_OPTION
@click.pass_context
def state_mv(ctx: click.Context, /, old: str, new: str, lock_timeout: float, **kw: Any) -> int:
    """Rename an address, keeping its invoice id."""
    opts = _options(ctx.find_root(), **kw)
    invoice_id = operations.state_mv(opts.settings(), old, new, views.hooks(), lock_timeout=_lock_timeout(lock_timeout))
    views.echo(f'Moved "{old}" to "{new}" (invoice {invoice_id}).')
    return 0


@state_group.command("pull")
@common_options
@click.pass_context
def state_pull(ctx: click.Context, /, **kw: Any) -> int:
    """Print the saved state as JSON (exit 1 when there is none yet)."""
    opts = _options(ctx.find_root(), **kw)
    views.echo(dumps_json(operations.state_pull(opts.settings(), views.hooks()).model_dump(), pretty=True))
    return 0


@state_group.command("push")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a state of another lineage or a serial that is not lower.")
@common_options
@LOCK_TIMEOUT_OPTION
@click.pass_context
def state_push(ctx: click.Context, /, file: Path, force: bool, lock_timeout: float, **kw: Any) -> int:
    """Store a state file as the latest state, keeping its lineage and serial (from files to PostgreSQL, say)."""
    opts = _options(ctx.find_root(), **kw)
    settings = opts.settings()
    pushed = operations.state_push(settings, settings.root / file, views.hooks(), force=force,
                                   lock_timeout=_lock_timeout(lock_timeout))
    views.echo(f"Pushed serial {pushed.serial} (lineage {pushed.lineage}, {len(pushed.invoices)} invoices) to "
               f"{operations.describe_backend(settings)}.")
    return 0


@state_group.command("history")
@common_options
@click.pass_context
def state_history(ctx: click.Context, /, **kw: Any) -> int:
    """Every serial saved (PostgreSQL): time, command, who, counts."""
    opts = _options(ctx.find_root(), **kw)
    versions = operations.state_history(opts.settings())
    views.echo(dumps_json([v.to_dict() for v in versions], pretty=True) if opts.json else views.history(versions))
    return 0


@cli.command("environments")
@click.option("--json", "json_", is_flag=True, help="Machine-readable output on stdout.")
@click.pass_context
def environments_cmd(ctx: click.Context, /, json_: bool) -> int:
    """The environments the config defines: endpoint, backend, state serial."""
    summaries = operations.environments(ctx.obj.get("directory"))
    views.echo(dumps_json([dataclasses.asdict(s) for s in summaries], pretty=True) if json_ else views.environments(summaries))
    return 0


@cli.command("force-unlock")
@click.option("-e", "--env", "env", metavar="NAME")
@click.pass_context
def force_unlock(ctx: click.Context, /, env: str | None) -> int:
    """Break a stale lock; on PostgreSQL, end the session holding it, after saying whose it is."""
    unlocked = operations.force_unlock(load_settings(ctx.obj.get("directory"), environment=_environment(ctx.obj, env)),
                                       views.hooks())
    views.echo(views.unlocked(unlocked))
    return 0


@cli.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), help="Keep invoices in this JSON file.")
@click.option("--fixtures", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Entities, clients, products, contracts.")
@click.option("--token", "tokens", multiple=True, metavar="TOKEN", help="Accepted API key(s) (default: sandbox).")
@click.option("--latency-ms", type=click.FloatRange(0), default=0.0)
@click.option("--fail-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--throttle-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.0)
@click.option("--retry-after", type=click.FloatRange(0), default=1.0, help="Retry-After seconds on injected 429s.")
@click.option("--rate-limit", type=click.FloatRange(0), default=None, metavar="R",
              help="Requests a second for all Campfire requests together (a token bucket; 429 with Retry-After "
                   "in whole seconds, as DRF); 0 or absent: no limit.")
@click.option("--burst", type=click.IntRange(1), default=1, show_default=True, metavar="B",
              help="Requests the rate limit lets through at once (the bucket's size; it starts full).")
@click.option("--seed", type=int, default=None)
@click.option("--ignore-idempotency", is_flag=True, help="Ignore Idempotency-Key, as the real API may.")
def sandbox_cmd(host: str, port: int, data: Path | None, fixtures: Path | None, tokens: tuple[str, ...], latency_ms: float,
                fail_rate: float, throttle_rate: float, drop_rate: float, retry_after: float, rate_limit: float | None,
                burst: int, seed: int | None, ignore_idempotency: bool) -> int:
    """Serve the Campfire-compatible sandbox over HTTP (Ctrl-C stops it)."""
    from invoicesync.sandbox import DEFAULT_TOKEN, FaultSettings, Sandbox
    from invoicesync.sandbox.server import serve

    sandbox = Sandbox(
        data_file=data,
        fixtures_file=fixtures,
        tokens=tokens or (DEFAULT_TOKEN,),
        honour_idempotency=not ignore_idempotency,
        faults=FaultSettings(latency_ms=latency_ms, fail_rate=fail_rate, throttle_rate=throttle_rate,
                             drop_rate=drop_rate, seed=seed, retry_after=retry_after, rate_limit=rate_limit,
                             burst=burst),
    )

    def ready(url: str) -> None:
        click.echo(f"Sandbox listening on {url} (API key: {'the one(s) given' if tokens else DEFAULT_TOKEN}). Ctrl-C stops it.", err=False)

    serve(sandbox, host=host, port=port, on_ready=ready)
    click.echo("Sandbox stopped.")
    return 0


# --- entry point and the one error handler -------------------------------------------------------------


#: Terraform's single-dash flags that invoicesync spells with two dashes, or not at all.
_TERRAFORM_ONLY = {"input": "invoicesync never prompts for variables", "lock": "the state is always locked"}


def _single_dash_flag(args: Sequence[str]) -> str | None:
    """A usage error for a Terraform-style flag (`-out=plan.json`, `-auto-approve`), which click would read as `-o`."""
    longs = {opt[2:] for command in [cli, *_commands(cli)] for param in command.params
             for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")}
    for arg in args:
        if arg == "--":
            break
        match = re.fullmatch(r"-([a-z][a-z0-9]*(?:-[a-z0-9]+)+|[a-z]{2,}[a-z0-9-]*)(=.*)?", arg)
        if not match:
            continue
        name, value = match.group(1), match.group(2) or ""
        if name in longs:
            return f"invoicesync spells it with two dashes: --{name}{value} (not Terraform's {arg})"
        if name in _TERRAFORM_ONLY:
            return f"Terraform's {arg} has no invoicesync equivalent: {_TERRAFORM_ONLY[name]}"
    return None


def _commands(group: click.Group) -> list[click.Command]:
    out: list[click.Command] = []
    for command in group.commands.values():
        out.append(command)
        if isinstance(command, click.Group):
            out.extend(_commands(command))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (0, 1, or 2 for plan --detailed-exitcode with changes)."""
    args = list(sys.argv[1:] if argv is None else argv)
    terraform_flag = _single_dash_flag(args)
    if terraform_flag:
        views.echo(f"Error: {terraform_flag}.\nTry 'invoicesync --help' for help.", err=True)
        return 1
    try:
        result = cli.main(args=args, prog_name="invoicesync", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        views.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.UsageError as exc:
        hint = f"\nTry '{exc.ctx.command_path} --help' for help." if exc.ctx else ""
        views.echo(f"Error: {exc.format_message()}{hint}", err=True)
        return 1
    except click.exceptions.Abort:
        views.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        views.echo(f"Error: {exc.format_message()}", err=True)
        return 1
    except InvoiceSyncError as exc:
        views.echo(f"Error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        views.echo("Interrupted.", err=True)
        return 1
    except Exception as exc:  # the one broad handler: an internal error, never a user mistake
        if os.environ.get("INVOICESYNC_DEBUG"):
            traceback.print_exc()
        views.echo(f"Error: internal error ({type(exc).__name__}: {exc}). Set INVOICESYNC_DEBUG=1 to see the traceback.", err=True)
        return 1
    if isinstance(result, int):
        return result
    return 0
