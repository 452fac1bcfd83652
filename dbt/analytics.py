#!/usr/bin/env python3
"""Run vesper's analytics: `dbt build` over a lake, then print the answer.

Builds the dbt-duckdb project beside this script (staging, marts, dims and
all their tests) from a vesper lake, a directory or an S3 bucket, into a
DuckDB results file, and prints the top_5_prayer_types_per_age_group table.

Standard library only. It finds or installs uv, lets uv install the pinned
dbt environment from uv.lock (dbt/.venv), and runs dbt there, so it needs
nothing but Python 3 (3.10+ for dbt itself) and, on first use, PyPI.
It works from any working directory.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DBT_DIR = Path(__file__).resolve().parent
REPO_DIR = DBT_DIR.parent
DEFAULT_RESULTS = REPO_DIR / "results" / "dbt.duckdb"
TOOLS_VENV = REPO_DIR / ".tools" / "cli"
UV_VERSION = "0.13.9"
REPORT_TABLE = "top_5_prayer_types_per_age_group"

# Exit codes (stable: `vesper analytics` passes them on).
EXIT_OK = 0
EXIT_BUILD_FAILED = 1  # dbt build failed: a model errored or a data test failed
EXIT_USAGE = 2  # bad arguments or environment (lake missing, credentials unset...)
EXIT_SETUP = 3  # Python/uv/dbt environment could not be set up
EXIT_REPORT = 4  # the build passed but the results could not be read

EPILOG = """\
examples:
  python3 dbt/analytics.py --lake ./lake
  python3 dbt/analytics.py --lake s3://datalake        # target s3 implied
  python3 dbt/analytics.py --lake /srv/lake --select stg_hallow__users+

targets:
  local  (default) the lake is a directory, made absolute here.
  s3     the lake is s3://bucket[/prefix]. Credentials and endpoint come from
         AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional),
         AWS_REGION (default us-east-1) and AWS_ENDPOINT_URL (or
         AWS_ENDPOINT_URL_S3; unset means AWS itself). Path-style addressing,
         plain HTTP when the endpoint is http://. DuckDB's httpfs extension
         comes from the PyPI package duckdb-extension-httpfs (linux x86_64
         and aarch64, macOS arm64); nothing is downloaded at run time.

environment:
  VESPER_LAKE         the lake when --lake is not given (default ./lake)
  VESPER_DUCKDB_PATH  the results file when --results is not given
                      (default <repo>/results/dbt.duckdb)
  VESPER_UV           the uv executable to use (else uv on PATH, else one
                      installed into <repo>/.tools/cli with pip)
  DBT_TARGET_PATH, DBT_LOG_PATH  where dbt writes its artefacts and logs
                      (default dbt/target and dbt/logs)

exit codes:
  0  built and tested; the table was printed
  1  dbt build failed (a model or a data test failed; see dbt's output)
  2  bad arguments or environment (no lake, no credentials, ...)
  3  the Python/uv/dbt environment could not be set up
  4  built, but the results could not be read
"""


class Failure(Exception):
    """An error to report in one clear message, with an exit code."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def say(message):
    print("analytics: " + message, file=sys.stderr, flush=True)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="analytics.py",
        description=(
            "Build vesper's analytics (the dbt-duckdb project in this directory) "
            "from a lake, run all its data tests, and print the top 5 prayer "
            "types per age group."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--lake",
        metavar="DIR|s3://BUCKET[/PREFIX]",
        help="the lake to read: a directory (relative to the current directory) "
        "or s3://bucket[/prefix]; default $VESPER_LAKE, else ./lake",
    )
    parser.add_argument(
        "--target",
        choices=("local", "s3"),
        help="dbt target: local for a directory lake, s3 for an S3 lake; "
        "default: s3 when the lake is s3://..., else local",
    )
    parser.add_argument(
        "--results",
        metavar="FILE",
        help="the DuckDB results file to build; default $VESPER_DUCKDB_PATH, "
        "else <repo>/results/dbt.duckdb",
    )
    parser.add_argument(
        "--select",
        "-s",
        nargs="+",
        action="append",
        metavar="SELECTOR",
        help="build only these dbt nodes (dbt's --select syntax), e.g. "
        "'top_5_prayer_types_per_age_group+' or 'tag:x'",
    )
    parser.add_argument(
        "--setup-only",
        action="store_true",
        help="only set up dbt's environment (uv sync, and DuckDB's httpfs for the s3 "
        "target), print VESPER_DUCKDB_EXTENSION_DIR when there is one, and exit; "
        "no lake needed (for container images that run dbt directly)",
    )
    return parser.parse_args(argv)


def resolve_lake(args):
    raw = args.lake if args.lake is not None else os.environ.get("VESPER_LAKE", "")
    raw = raw.strip() or "./lake"
    if raw.startswith("s3://"):
        bucket = raw[len("s3://"):].strip("/")
        if not bucket:
            raise Failure(EXIT_USAGE, "lake %r names no bucket; expected s3://bucket[/prefix]" % raw)
        lake, kind = "s3://" + bucket, "s3"
    elif "://" in raw:
        raise Failure(EXIT_USAGE, "lake %r: only directories and s3:// URLs are supported" % raw)
    else:
        lake, kind = str(Path(raw).expanduser().resolve()), "local"

    target = args.target or kind
    if target != kind:
        if kind == "s3":
            raise Failure(EXIT_USAGE, "lake %s is in S3: use --target s3 (or omit --target)" % lake)
        raise Failure(EXIT_USAGE, "--target s3 needs an s3://bucket[/prefix] lake, not the directory %s" % lake)

    if kind == "local":
        path = Path(lake)
        if not path.is_dir():
            raise Failure(
                EXIT_USAGE,
                "no lake directory at %s; give --lake DIR (or set VESPER_LAKE), "
                "e.g. one written by `vesper sample-data --lake DIR` or `vesper up`" % lake,
            )
        missing = [n for n in ("users.csv", "sessions.csv", "content.csv") if not (path / "data" / n).is_file()]
        if missing:
            raise Failure(
                EXIT_USAGE,
                "the lake %s has no sample data (missing data/%s); write it with "
                "`vesper sample-data --lake %s`" % (lake, ", data/".join(missing), lake),
            )
    else:
        unset = [v for v in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
        if unset:
            raise Failure(EXIT_USAGE, "the s3 target needs credentials: set %s" % " and ".join(unset))
    return lake, target


def resolve_results(args):
    raw = args.results if args.results is not None else os.environ.get("VESPER_DUCKDB_PATH", "")
    path = Path(raw.strip()).expanduser().resolve() if raw.strip() else DEFAULT_RESULTS
    if path.is_dir():
        raise Failure(EXIT_USAGE, "results %s is a directory; give a file path" % path)
    return path


def make_results_dir(results):
    try:
        results.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Failure(EXIT_USAGE, "cannot create the results directory %s: %s" % (results.parent, err))


def venv_bin(venv, name):
    if os.name == "nt":
        return venv / "Scripts" / (name + ".exe")
    return venv / "bin" / name


def find_uv():
    """$VESPER_UV, else uv on PATH, else <repo>/.tools/cli/bin/uv (installed with pip if missing)."""
    explicit = os.environ.get("VESPER_UV", "").strip()
    if explicit:
        found = shutil.which(explicit)
        if not found:
            raise Failure(EXIT_SETUP, "VESPER_UV=%s is not an executable; fix it or unset it" % explicit)
        return found
    found = shutil.which("uv")
    if found:
        return found
    uv = venv_bin(TOOLS_VENV, "uv")
    if uv.is_file():
        return str(uv)

    say("uv not found; installing uv==%s into %s (one-off)" % (UV_VERSION, TOOLS_VENV))
    python = venv_bin(TOOLS_VENV, "python")
    if not python.is_file():
        result = subprocess.run([sys.executable, "-m", "venv", str(TOOLS_VENV)])
        if result.returncode != 0:
            raise Failure(
                EXIT_SETUP,
                "could not create a virtual environment with %s -m venv.\n"
                "  Install Python's venv module (Debian/Ubuntu: apt-get install python3-venv),\n"
                "  or install uv yourself (https://docs.astral.sh/uv/ or pip install uv==%s)\n"
                "  and put it on PATH or in VESPER_UV." % (sys.executable, UV_VERSION),
            )
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv==%s" % UV_VERSION]
    )
    if result.returncode != 0 or not uv.is_file():
        raise Failure(
            EXIT_SETUP,
            "could not install uv==%s from PyPI into %s (see pip's output above).\n"
            "  Check the network or proxy to PyPI, or install uv yourself\n"
            "  (pip install uv==%s) and put it on PATH or in VESPER_UV." % (UV_VERSION, TOOLS_VENV, UV_VERSION),
        )
    return str(uv)


def base_env(lake, results):
    env = dict(os.environ)
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["VESPER_LAKE"] = lake
    env["VESPER_DUCKDB_PATH"] = str(results)
    # dbt must not try to phone home.
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env["DO_NOT_TRACK"] = "1"
    if not sys.stdout.isatty():
        env.setdefault("DBT_USE_COLORS", "false")
    return env


def uv_sync(uv, env):
    result = subprocess.run([uv, "sync", "--frozen", "--quiet", "--project", str(DBT_DIR)], cwd=str(DBT_DIR), env=env)
    if result.returncode != 0:
        raise Failure(
            EXIT_SETUP,
            "`uv sync` could not set up dbt's environment in %s (see uv's output above).\n"
            "  It needs a Python 3.10+ interpreter on this machine (uv will not download one:\n"
            "  install python3 3.10 or newer, e.g. apt-get install python3, or point UV_PYTHON at one)\n"
            "  and, the first time, access to PyPI." % (DBT_DIR / ".venv"),
        )


def uv_python(uv, env, code, *args):
    """Runs Python code in dbt's environment; returns (exit code, stdout)."""
    result = subprocess.run(
        [uv, "run", "--frozen", "--no-sync", "--project", str(DBT_DIR), "python", "-c", code] + list(args),
        cwd=str(DBT_DIR),
        env=env,
        stdout=subprocess.PIPE,
    )
    return result.returncode, result.stdout.decode("utf-8", "replace")


HTTPFS_PROBE = r"""
import json, pathlib, sys
import duckdb
info = {"prefix": sys.prefix, "version": duckdb.__version__, "file": None}
info["platform"] = duckdb.connect().execute("pragma platform").fetchone()[0]
try:
    import duckdb_extension_httpfs
    root = pathlib.Path(duckdb_extension_httpfs.__file__).parent / "extensions"
    wanted = root / ("v" + duckdb.__version__) / "httpfs.duckdb_extension"
    if wanted.is_file():
        info["file"] = str(wanted)
except ImportError:
    pass
print(json.dumps(info))
"""


def prepare_httpfs(uv, env):
    """Lays out DuckDB's extension directory with the httpfs of the PyPI wheel.

    DuckDB looks for <extension_directory>/v<version>/<platform>/httpfs.duckdb_extension;
    the wheel ships extensions/v<version>/httpfs.duckdb_extension, so link it
    into that layout, inside dbt's virtual environment.
    """
    code, out = uv_python(uv, env, HTTPFS_PROBE)
    if code != 0:
        raise Failure(EXIT_SETUP, "could not run Python in dbt's environment (%s)" % (DBT_DIR / ".venv"))
    info = json.loads(out.strip().splitlines()[-1])
    if not info["file"]:
        raise Failure(
            EXIT_SETUP,
            "the s3 target needs DuckDB's httpfs extension for duckdb %s on %s, which the PyPI\n"
            "  package duckdb-extension-httpfs provides for linux x86_64 and aarch64 and macOS arm64\n"
            "  only; it is not installed here. Use the local target on a copy of the lake, or run on\n"
            "  one of those platforms."
            % (info["version"], info["platform"]),
        )
    ext_dir = Path(info["prefix"]) / "duckdb_extensions"
    dest = ext_dir / ("v" + info["version"]) / info["platform"] / "httpfs.duckdb_extension"
    source = Path(info["file"])
    if not (dest.is_file() and dest.resolve() == source.resolve()):
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        try:
            dest.symlink_to(source)
        except OSError:
            shutil.copyfile(str(source), str(dest))
    return ext_dir


def dbt_build(uv, env, target, select):
    cmd = [uv, "run", "--frozen", "--no-sync", "--project", str(DBT_DIR), "dbt", "build",
           "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR), "--target", target]
    if select:
        cmd += ["--select"] + select
    say("dbt build --target %s (lake %s, results %s)" % (target, env["VESPER_LAKE"], env["VESPER_DUCKDB_PATH"]))
    return subprocess.run(cmd, cwd=str(DBT_DIR), env=env).returncode


REPORT_QUERY = r"""
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
found = con.execute(
    "select count(*) from information_schema.tables where table_schema = 'main' and table_name = ?",
    [sys.argv[2]]).fetchone()[0]
if not found:
    print(json.dumps(None))
    sys.exit(0)
cur = con.execute(
    "select age_group, age_group_rank, prayer_type, session_count from main." + sys.argv[2]
    + " order by age_group, age_group_rank")
print(json.dumps({"columns": [d[0] for d in cur.description], "rows": cur.fetchall()}))
"""


def format_table(columns, rows):
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = [all(isinstance(row[i], (int, float)) for row in rows) and rows != [] for i in range(len(columns))]

    def line(values):
        out = []
        for i, v in enumerate(values):
            out.append(v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]))
        return "  ".join(out).rstrip()

    lines = [line(cells[0]), "  ".join("-" * w for w in widths)]
    previous_group = None
    for raw, row in zip(rows, cells[1:]):
        if previous_group is not None and raw[0] != previous_group:
            lines.append("")
        previous_group = raw[0]
        lines.append(line(row))
    return "\n".join(lines)


def report(uv, env, results, selected):
    code, out = uv_python(uv, env, REPORT_QUERY, str(results), REPORT_TABLE)
    if code != 0:
        raise Failure(EXIT_REPORT, "dbt build passed but %s could not be read (see above)" % results)
    data = json.loads(out.strip().splitlines()[-1])
    if data is None:
        if selected:
            say("%s is not in %s (not selected); nothing to print" % (REPORT_TABLE, results))
            return
        raise Failure(EXIT_REPORT, "dbt build passed but %s has no table %s" % (results, REPORT_TABLE))
    print("%s (%s)" % (REPORT_TABLE, results))
    print()
    print(format_table(data["columns"], data["rows"]))
    sys.stdout.flush()


def setup_only(target):
    uv = find_uv()
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    uv_sync(uv, env)
    if target == "s3":
        print("VESPER_DUCKDB_EXTENSION_DIR=%s" % prepare_httpfs(uv, env))
    say("dbt environment ready in %s" % (DBT_DIR / ".venv"))
    return EXIT_OK


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    select = [s for group in (args.select or []) for s in group]
    try:
        if args.setup_only:
            return setup_only(args.target or "local")
        lake, target = resolve_lake(args)
        results = resolve_results(args)
        uv = find_uv()
        env = base_env(lake, results)
        uv_sync(uv, env)
        if target == "s3":
            env["VESPER_DUCKDB_EXTENSION_DIR"] = str(prepare_httpfs(uv, env))
        make_results_dir(results)
        code = dbt_build(uv, env, target, select)
        if code != 0:
            raise Failure(EXIT_BUILD_FAILED, "dbt build failed (dbt exit code %d); see its output above" % code)
        report(uv, env, results, bool(select))
    except Failure as failure:
        say("error: " + failure.message)
        return failure.code
    except OSError as err:  # e.g. uv vanished or is not executable
        say("error: could not run %s: %s" % (getattr(err, "filename", None) or "a command", err))
        return EXIT_SETUP
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
