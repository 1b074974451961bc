"""``zhflow serve``: scheduled deployments of the training and scoring flows.

One long-running process registers two deployments with a Prefect server (``zhflow server
start``, or any Prefect server ``PREFECT_API_URL`` names) and runs their flow runs as they
come due: no work pool and no worker needed (for the work-pool style see ``prefect.yaml``).
Stop it with Ctrl-C; its schedules are paused.

    zhflow server start
    zhflow serve --corpus reviews.csv --score-input incoming/ --train-cron "0 2 * * *"

The click command lives here (``flows/cli.py`` registers it); Prefect is imported only
when it runs, so ``zhflow --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from zhflow.flows.flag_types import INTERVAL
from zhflow.tasks import catalog
from zhflow.tasks.defaults import RUN

TRAIN_FLOW = "zhflow-train"
SCORE_FLOW = "zhflow-score"
EVALUATE_FLOW = "zhflow-evaluate"
DEFAULT_NAME = "nightly"
DEFAULT_TRAIN_CRON = "0 2 * * *"  # 02:00
DEFAULT_SCORE_CRON = "0 6 * * *"  # 06:00, after training
DEFAULT_EVAL_CRON = "0 7 * * *"  # 07:00: the latest bundle on newly labelled data
DEFAULT_TIMEZONE = "Asia/Shanghai"
NO_SERVER = (
    "zhflow serve needs a Prefect server: run `zhflow server start` (or set PREFECT_API_URL "
    "to a running `prefect server start`)"
)


class ServeError(click.ClickException):
    """One line on stderr, ``zhflow: error: ...``, exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"zhflow: error: {self.message}", err=True)


#: What Prefect refuses in a deployment's name (prefect.flows' banned characters).
BANNED_NAME_CHARACTERS = "/%&><"


def check_deployment_name(name: str, param: Any) -> str:
    """A deployment name Prefect takes: not blank, none of ``/ % & > <``."""
    flag = f"--{param.name.replace('_', '-')}" if param is not None else "name"
    if not name.strip():
        raise ServeError(f"{flag} is empty: name the deployment (default {DEFAULT_NAME!r})")
    banned = sorted({c for c in name if c in BANNED_NAME_CHARACTERS})
    if banned:
        raise ServeError(f"{flag} {name!r}: a deployment name cannot hold {' '.join(banned)}")
    return name


def check_cron(cron: str, timezone: str, flag: str) -> None:
    """Five fields (minute hour day month weekday), as cron has: a sixth, seconds, which
    croniter would take, would start a run every second."""
    from prefect.client.schemas.schedules import CronSchedule

    fields = cron.split()
    if len(fields) != 5:
        raise ServeError(f"{flag} {cron!r}: a cron expression has 5 fields (minute hour day "
                         f"month weekday), this has {len(fields)}")  # fmt: skip
    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError:
        raise ServeError(f"{flag} {cron!r}: not a valid cron expression") from None


def check_params_as_flags(params: dict[str, Any], command: click.Command, flag: str) -> None:
    """Each parameter through the type of ``command``'s option of that name, so its ranges
    and choices hold here as on the command line (``--train-param epochs=0`` is refused as
    ``zhflow run --epochs 0`` is; ``lr=NaN`` as ``--lr nan``)."""
    options = {p.name: p for p in command.params if isinstance(p, click.Option)}
    ctx = click.Context(command)
    for key, value in params.items():
        option = options.get(key)
        if option is None or value is None or option.multiple or option.is_flag:
            continue
        try:
            option.type.convert(value, option, ctx)
        except click.BadParameter as exc:
            raise ServeError(f"{flag} {key}={json.dumps(value, ensure_ascii=False)}: "
                             f"{exc.message}") from None  # fmt: skip


def parse_params(pairs: tuple[str, ...], allowed: set[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs → parameters; VALUE is JSON when it parses (``3``, ``true``,
    ``["a","b"]``), else a string. KEY may use dashes (``embedding-dim``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ServeError(f"{flag} {pair!r}: expected KEY=VALUE")
        if key not in allowed:
            raise ServeError(f"{flag} {pair!r}: unknown parameter {key!r}; one of "
                             f"{', '.join(sorted(allowed))}")  # fmt: skip
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def check_deployment_parameters(deployments: list[Any], flows: list[Any]) -> None:
    """Each deployment's parameters as its flow will check them (types included), before
    anything is registered: a bad ``--train-param epochs=abc`` is one line here, not a
    server's 422 at registration."""
    from prefect.exceptions import ParameterTypeError

    by_name = {flow.name: flow for flow in flows}
    quiet = logging.getLogger("prefect.flows")  # it logs the failure too: the line below says it
    for deployment in deployments:
        was, quiet.disabled = quiet.disabled, True
        try:
            by_name[deployment.flow_name].validate_parameters(deployment.parameters)
        except ParameterTypeError as exc:
            problems = [line.strip(" -") for line in str(exc).splitlines()[1:] if line.strip()]
            flag = {TRAIN_FLOW: "--train-param", SCORE_FLOW: "--score-param"}.get(
                deployment.flow_name, "--eval-param"
            )
            raise ServeError(f"{flag}: {'; '.join(problems) or exc}") from None
        finally:
            quiet.disabled = was


def make_schedule(
    cron: str | None, interval: float | None, timezone: str, default_cron: str
) -> Any:
    from prefect.schedules import Cron, Interval

    if interval is not None:
        return Interval(interval, timezone=timezone)
    return Cron(cron or default_cron, timezone=timezone)


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def build_deployments(
    *,
    corpus: tuple[str, ...] = (),
    workdir: str = "data/work",
    bundle: str | None = None,
    score_input: tuple[str, ...] = (),
    score_output: str | None = None,
    train_cron: str | None = None,
    train_interval: float | None = None,
    score_cron: str | None = None,
    score_interval: float | None = None,
    timezone: str = DEFAULT_TIMEZONE,
    train_name: str = DEFAULT_NAME,
    score_name: str = DEFAULT_NAME,
    train_params: dict[str, Any] | None = None,
    score_params: dict[str, Any] | None = None,
    eval_input: tuple[str, ...] = (),
    eval_cron: str | None = None,
    eval_interval: float | None = None,
    eval_name: str = DEFAULT_NAME,
    eval_params: dict[str, Any] | None = None,
) -> list[Any]:
    """The RunnerDeployments to serve: training always, scoring and evaluation when they
    have an input.

    Paths are made absolute here, so runs do not depend on the server's or runner's cwd.
    The scoring deployment's ``bundle`` defaults to the work dir: each run scores with the
    bundle of the last training run (``runs/latest.json``), and so does the evaluation's,
    which writes each run's metrics to ``WORKDIR/evaluations/<corpus>-<time>``."""
    from zhflow.flows.pipeline import train_pipeline
    from zhflow.flows.scoring import score_pipeline

    root = _abs(workdir)
    train = {"corpus": [_abs(c) for c in corpus] or None, "workdir": root, **(train_params or {})}
    deployments = [
        train_pipeline.to_deployment(
            name=train_name,
            schedules=[make_schedule(train_cron, train_interval, timezone, DEFAULT_TRAIN_CRON)],
            parameters=train,
            tags=["zhflow", "train"],
            description="zhflow training: corpus → tokens → vocab → model → metrics → bundle",
        )
    ]
    if score_input:
        inputs = [_abs(p) for p in score_input]
        score = {
            "bundle": _abs(bundle) if bundle else root,
            "input": inputs[0] if len(inputs) == 1 else inputs,
            "output": _abs(score_output or str(Path(root) / catalog.SCORES)),
            **(score_params or {}),
        }
        deployments.append(
            score_pipeline.to_deployment(
                name=score_name,
                schedules=[make_schedule(score_cron, score_interval, timezone, DEFAULT_SCORE_CRON)],
                parameters=score,
                tags=["zhflow", "score"],
                description="zhflow batch scoring with the latest (or a given) model bundle",
            )
        )
    if eval_input:
        from zhflow.flows.evaluation import evaluate_pipeline

        evaluate = {
            "bundle": _abs(bundle) if bundle else root,
            "corpus": [_abs(p) for p in eval_input],
            "output_root": str(Path(root) / catalog.EVALUATIONS_DIR),
            **(eval_params or {}),
        }
        deployments.append(
            evaluate_pipeline.to_deployment(
                name=eval_name,
                schedules=[make_schedule(eval_cron, eval_interval, timezone, DEFAULT_EVAL_CRON)],
                parameters=evaluate,
                tags=["zhflow", "evaluate"],
                description="zhflow evaluation of the latest (or a given) bundle on labelled "
                "data; fails below min_accuracy",
            )
        )
    return deployments


def check_server() -> str:
    """The API URL, or a one-line error: serving needs ``prefect server start``, not the
    temporary server each command starts when ``PREFECT_API_URL`` is unset."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise ServeError(NO_SERVER)
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        raise ServeError(
            f"no Prefect server answers at PREFECT_API_URL={url} ({exc}); "
            "start it with `prefect server start --host 127.0.0.1`"
        ) from None
    return url


def check_as_the_commands_do(deployments: list[Any], params: dict[str, dict[str, Any]]) -> None:
    """Before anything is registered, what ``zhflow run``, ``score`` and ``evaluate`` check
    before their flows, for the parameters the scheduled runs will get (read from the built
    ``deployments``, defaults and absolute paths included): each ``--*-param`` value's range
    and choices, the work dir, split fractions, user dict and stopwords, the corpus where it
    exists already (read and split), the scoring output. A nightly run should not be the
    first to find a bad flag."""
    from zhflow.flows.cli import _check_run_paths, run, score
    from zhflow.flows.commands import evaluate_command
    from zhflow.flows.scoring import check_score_output
    from zhflow.tasks.errors import ZhflowError

    for flag, command in (("train", run), ("score", score), ("eval", evaluate_command)):
        check_params_as_flags(params[flag], command, f"--{flag}-param")
    by_flow = {d.flow_name: d.parameters for d in deployments}
    train = by_flow[TRAIN_FLOW]
    present = [p for p in train["corpus"] or [] if Path(p).exists()]
    try:
        _check_run_paths(**{**train, "corpus": present or None})
        if SCORE_FLOW in by_flow:
            scoring = by_flow[SCORE_FLOW]
            check_score_output(scoring["bundle"], scoring["input"], scoring["output"])
    except ZhflowError as exc:
        raise ServeError(str(exc)) from None


def _param_names(fn: Any) -> set[str]:
    import inspect

    return set(inspect.signature(fn.fn).parameters)


@click.command("serve")
@click.option(
    "--corpus",
    multiple=True,
    type=click.Path(),
    help="Training corpus file or folder (repeatable; default: the demo corpus).",
)
@click.option(
    "--workdir",
    default=RUN.workdir,
    show_default=True,
    help="Work dir of the training runs (and the scoring runs' default bundle).",
)
@click.option(
    "--bundle",
    type=click.Path(),
    help="Scoring: a model bundle folder (default: the work dir's latest bundle at run time).",
)
@click.option(
    "--score-input",
    multiple=True,
    type=click.Path(),
    help="Scoring input file or folder (repeatable); without it only training is served.",
)
@click.option(
    "--score-output",
    type=click.Path(),
    help="Predictions Parquet file (default: WORKDIR/scores/predictions.parquet).",
)
@click.option("--train-cron", help=f"Cron schedule of training (default: {DEFAULT_TRAIN_CRON!r}).")
@click.option("--train-interval", type=INTERVAL, help="Train every N seconds instead of cron.")
@click.option("--score-cron", help=f"Cron schedule of scoring (default: {DEFAULT_SCORE_CRON!r}).")
@click.option("--score-interval", type=INTERVAL, help="Score every N seconds instead of cron.")
@click.option(
    "--timezone",
    default=DEFAULT_TIMEZONE,
    show_default=True,
    help="IANA time zone of the schedules.",
)
@click.option(
    "--train-name",
    default=DEFAULT_NAME,
    show_default=True,
    callback=lambda ctx, param, value: check_deployment_name(value, param),
    help="Deployment name: zhflow-train/NAME.",
)
@click.option(
    "--score-name",
    default=DEFAULT_NAME,
    show_default=True,
    callback=lambda ctx, param, value: check_deployment_name(value, param),
    help="Deployment name: zhflow-score/NAME.",
)
@click.option(
    "--train-param",
    "train_param",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another training parameter, e.g. epochs=4, tokenizer=char (repeatable).",
)
@click.option(
    "--score-param",
    "score_param",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another scoring parameter, e.g. text_col=review (repeatable).",
)
@click.option(
    "--eval-input",
    multiple=True,
    type=click.Path(),
    help="Evaluation: a labelled corpus file or folder (repeatable); serves zhflow-evaluate/NAME.",
)
@click.option("--eval-cron", help=f"Cron schedule of evaluation (default: {DEFAULT_EVAL_CRON!r}).")
@click.option("--eval-interval", type=INTERVAL, help="Evaluate every N seconds instead.")
@click.option(
    "--eval-name",
    default=DEFAULT_NAME,
    show_default=True,
    callback=lambda ctx, param, value: check_deployment_name(value, param),
    help="Deployment name: zhflow-evaluate/NAME.",
)
@click.option(
    "--eval-param",
    "eval_param",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another evaluation parameter, e.g. min_accuracy=0.9, label_col=y (repeatable).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=1, show_default=True, help="Flow runs at once."
)
def serve_command(
    train_param: tuple[str, ...],
    score_param: tuple[str, ...],
    eval_param: tuple[str, ...],
    limit: int,
    **options: Any,
) -> None:
    """Serve scheduled deployments zhflow-train/NAME, zhflow-score/NAME and
    zhflow-evaluate/NAME on the zhflow server (`zhflow server start`) or PREFECT_API_URL.
    Ctrl-C stops and pauses them."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(options["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        raise ServeError(f"--timezone {options['timezone']!r}: unknown IANA time zone") from None
    for flag in ("train", "score", "eval"):
        if options[f"{flag}_cron"] and options[f"{flag}_interval"]:
            raise ServeError(f"--{flag}-cron and --{flag}-interval: give one of them")
        cron = options[f"{flag}_cron"]
        if cron is not None:  # "" too: not silently the default
            check_cron(cron, options["timezone"], f"--{flag}-cron")
    from prefect import serve

    from zhflow.flows.evaluation import evaluate_pipeline
    from zhflow.flows.pipeline import train_pipeline
    from zhflow.flows.scoring import score_pipeline

    params = {
        "train": parse_params(train_param, _param_names(train_pipeline), "--train-param"),
        "score": parse_params(score_param, _param_names(score_pipeline), "--score-param"),
        "eval": parse_params(eval_param, _param_names(evaluate_pipeline), "--eval-param"),
    }
    deployments = build_deployments(
        **options,
        train_params=params["train"],
        score_params=params["score"],
        eval_params=params["eval"],
    )
    for flag, paths in (("--corpus", options["corpus"]), ("--score-input", options["score_input"]),
                        ("--eval-input", options["eval_input"])):  # fmt: skip
        for missing in (p for p in paths if not Path(p).expanduser().exists()):
            # A nightly export may not exist yet when serving starts: said, not refused.
            click.echo(f"zhflow serve: warning: {flag} {missing} does not exist (yet): its "
                       "runs fail until it does", err=True)  # fmt: skip
    check_as_the_commands_do(deployments, params)
    check_deployment_parameters(deployments, [train_pipeline, score_pipeline, evaluate_pipeline])
    from zhflow.flows.server import connect

    # The zhflow server, unless PREFECT_API_URL says otherwise; a normal exit, so the
    # runner's shutdown (pausing the schedules) runs in full.
    connect(announce=False, quick_exit=False)
    url = check_server()
    names = [f"{d.flow_name}/{d.name}" for d in deployments]
    if not options["score_input"] and not options["eval_input"]:
        click.echo("zhflow serve: no --score-input or --eval-input, serving training only",
                   err=True)  # fmt: skip
    click.echo(
        f"zhflow serve: {', '.join(names)} on {url} (UI: {url.removesuffix('/api')})", err=True
    )
    sys.stdout.flush()
    os.environ.setdefault("PREFECT_API_URL", url)  # the runs the runner starts
    serve(*deployments, limit=limit)
