"""Benchmark: a cold ``zhflow run`` against an unchanged rerun, Prefect server start-up excluded.

    python benchmarks/bench_cache.py [CORPUS|demo] [--epochs N] [-- EXTRA zhflow run FLAGS]

Starts one ``prefect server start --host 127.0.0.1 --port <free>`` (PREFECT_HOME in a temporary
folder, analytics off), waits for ``/api/health`` (that start-up is timed and reported, never
counted), then runs ``zhflow run CORPUS --workdir <tmp> --json --epochs N`` twice with
``PREFECT_API_URL`` pointing at it: cold (empty work dir), then unchanged. Each is the wall
time of the whole ``zhflow`` process (interpreter, imports, flow run and every task). The
second run must report every task ``Cached``. By default the main job: ``zhflow run`` on
the demo corpus with default settings (``demo``; ``--epochs`` unset); everything after ``--``
is passed to ``zhflow run``. The fixed cost of a rerun is split out: ``import_s`` is the wall
time of a process that only imports the CLI and flows (interpreter + torch + polars + Prefect).
``--threads N`` sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for both runs (torch's threads;
on a busy machine 1 stops OpenMP threads spinning against other work, which made one
training epoch take 248 s instead of ~15 s here).
The last line of stdout is one JSON object, with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT / ".." / "shared" / "corpora" / "waimai_10k.csv"
BIN = Path(sys.executable).parent


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path, env: dict[str, str], timeout: float
) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    log = open(home / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"prefect server exited with {proc.returncode}; see {home}/server.log")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc, url, time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"prefect server not healthy after {timeout:.0f}s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server this script started: its own process group, by its id."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def zhflow_run(cmd: list[str], env: dict[str, str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"zhflow run failed with exit code {done.returncode}")
    return seconds, json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "corpus", nargs="?", default="demo", help=f"a file, or demo (e.g. {DEFAULT_CORPUS})"
    )
    ap.add_argument("--epochs", type=int, default=None, help="default: zhflow's")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for zhflow")
    ap.add_argument("--server-timeout", type=float, default=180.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="zhflow-bench-cache-"))
    home = tmp / "prefect_home"
    home.mkdir()
    env = dict(
        os.environ,
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
    )
    env.pop("PREFECT_API_URL", None)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    load_start = loadavg()
    server, url, server_s = start_server(home, env, args.server_timeout)
    try:
        env["PREFECT_API_URL"] = url
        corpus = [] if args.corpus == "demo" else [str(Path(args.corpus).resolve())]
        epochs = [] if args.epochs is None else ["--epochs", str(args.epochs)]
        cmd = [str(BIN / "zhflow"), "run", *corpus, "--workdir", str(tmp / "work"), "--json",
               *epochs, *extra]  # fmt: skip
        cold_s, cold = zhflow_run(cmd, env)
        load_mid = loadavg()
        warm_s, warm = zhflow_run(cmd, env)
        load_end = loadavg()
        t0 = time.perf_counter()
        probe = "import zhflow.flows.cli, zhflow.flows.pipeline"
        subprocess.run([sys.executable, "-c", probe], env=env, check=True, cwd=ROOT)
        import_s = time.perf_counter() - t0
    finally:
        stop_server(server)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    cold_states = {t["name"]: t["state"] for t in cold["tasks"]}
    warm_states = {t["name"]: t["state"] for t in warm["tasks"]}
    all_cached = all(s == "Cached" for s in warm_states.values())
    ratio = warm_s / cold_s
    print(
        f"corpus: {args.corpus}  epochs={args.epochs}  threads={args.threads}  extra={extra}  "
        f"prefect server start-up {server_s:.1f}s (excluded)  "
        f"loadavg {load_start} / {load_mid} / {load_end}"
    )
    print(f"{'run':<10} {'wall s':>8}  task states")
    print(f"{'cold':<10} {cold_s:>8.1f}  {cold_states}")
    print(f"{'unchanged':<10} {warm_s:>8.1f}  {warm_states}")
    print(f"rerun / cold: {ratio:.3f} (target <= 0.10); accuracy {cold.get('accuracy')}")
    print(f"of the rerun, {import_s:.1f}s is starting Python and importing zhflow's flows")
    print(
        json.dumps(
            {
                "corpus": str(args.corpus),
                "epochs": args.epochs,
                "extra": extra,
                "server_start_s": round(server_s, 2),
                "cold_s": round(cold_s, 2),
                "rerun_s": round(warm_s, 2),
                "import_s": round(import_s, 2),
                "ratio": round(ratio, 4),
                "rerun_all_cached": all_cached,
                "cold_states": cold_states,
                "rerun_states": warm_states,
                "accuracy": cold.get("accuracy"),
                "loadavg_start": load_start,
                "loadavg_mid": load_mid,
                "loadavg_end": load_end,
            }
        ),
        flush=True,
    )
    return 0 if all_cached else 1


if __name__ == "__main__":
    raise SystemExit(main())
