#!/usr/bin/env python3
"""End-to-end tests of vesper's analytics (the dbt project beside this folder).

    python3 dbt/tests/run_tests.py [--lake DIR] [--keep]

Standard library only. Without --lake it writes a deterministic fixture lake
into a temporary directory: the sample CSVs with the distributions of
docs/compatibility.md, webhook events over two days and several hour partitions (with
duplicates, signups, unknown property keys, a missing user snapshot), two
manifested users and content snapshot runs plus a newer run without a manifest
(which must be ignored), and storage internals under .vesper/ (never read).
With --lake it uses that lake instead (e.g. one `vesper sample-data` wrote).

Then, always through the real command (dbt/analytics.py), results in temporary
files (never results/dbt.duckdb):
  1. dbt build, target local, on the lake; the top-5 table is recomputed
     independently from the CSVs with the csv module and compared, and the
     event marts and snapshot dims are recomputed from the lake files;
  2. dbt build, target local, on a lake with only the CSVs (and an unfinished
     snapshot run): event and dim models build empty;
  3. starts moto ($VESPER_MOTO_SERVER, required), uploads the lake to a bucket,
     dbt build with the s3 target, and compares every table with step 1.
moto is stopped at the end, also on failure. Exit 0 only if everything passed.
"""

import argparse
import csv
import datetime as dt
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter, defaultdict
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
DBT_DIR = TESTS_DIR.parent
ANALYTICS = DBT_DIR / "analytics.py"
sys.path.insert(0, str(DBT_DIR))
sys.dont_write_bytecode = True  # no __pycache__ beside the driver
import analytics  # noqa: E402  (the driver: reuse its uv bootstrap)

AGE_GROUPS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
PRAYER_TYPES = ["academic", "podcast", "reflection", "lectio_divina", "rosary", "meditation"]
MEDIA_TYPES = ["video", "audio", "text"]
SOURCES = ["web", "apple", "android"]
EVENT_MODELS = ["stg_vesper__events", "fct_daily_active_users", "fct_content_engagement", "fct_daily_revenue"]
DIM_MODELS = ["dim_users", "dim_content"]
BUCKET = "vesper-analytics-test"


# --------------------------------------------------------------------------
# Reporting


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []

    def ok(self, name):
        self.passed += 1
        print("ok   - " + name, flush=True)

    def fail(self, name, detail):
        self.failed.append(name)
        print("FAIL - %s\n       %s" % (name, str(detail).replace("\n", "\n       ")), flush=True)

    def check(self, name, condition, detail=""):
        if condition:
            self.ok(name)
        else:
            self.fail(name, detail)
        return condition

    def equal(self, name, actual, expected):
        if actual == expected:
            self.ok(name)
            return True
        self.fail(name, diff(actual, expected))
        return False


def diff(actual, expected):
    if isinstance(actual, list) and isinstance(expected, list):
        missing = [r for r in expected if r not in actual]
        extra = [r for r in actual if r not in expected]
        return "expected %d rows, got %d; missing %s; unexpected %s" % (
            len(expected), len(actual), missing[:5], extra[:5])
    return "expected %r, got %r" % (expected, actual)


# --------------------------------------------------------------------------
# Fixture lake


def uuid7(when, rng):
    """A UUIDv7 string for a datetime (so run ids sort by time)."""
    ms = int(when.timestamp() * 1000)
    rand = rng.getrandbits(74)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = "%032x" % value
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def uuid4(rng):
    value = rng.getrandbits(128)
    value = (value & ~(0xF << 76)) | (0x4 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    h = "%032x" % value
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def rfc3339(when, micros=False):
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micros else "%Y-%m-%dT%H:%M:%SZ")


def random_moment(rng, year):
    start = dt.datetime(year, 1, 1)
    return start + dt.timedelta(seconds=rng.randrange(365 * 86400), microseconds=rng.randrange(1_000_000))


def write_ndjson(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, separators=(",", ":")) + "\n")


def write_sample_csvs(data_dir, rng):
    data_dir.mkdir(parents=True, exist_ok=True)
    ts = "%Y-%m-%d %H:%M:%S.%f"
    with open(data_dir / "users.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "age", "status", "country", "created_at"])
        for i in range(1, 10_001):
            w.writerow([
                i,
                rng.randint(18, 98),
                rng.choices(["free", "paid", "trial"], [6, 2, 2])[0],
                rng.choices(["US", "BR", "IF", "FR"], [5, 3, 1, 1])[0],
                random_moment(rng, 2023).strftime(ts),
            ])
    with open(data_dir / "content.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "media_type", "prayer_type", "created_at"])
        for i in range(1, 1_001):
            w.writerow([
                i,
                rng.choices(MEDIA_TYPES, [3, 6, 1])[0],
                rng.choices(PRAYER_TYPES, [1, 1, 2, 2, 3, 1])[0],
                random_moment(rng, 2023).strftime(ts),
            ])
    with open(data_dir / "sessions.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "user_id", "content_id", "is_complete", "created_at"])
        for i in range(1, 100_001):
            w.writerow([
                i,
                rng.randint(1, 10_000),
                rng.randint(1, 1_000),
                rng.choice(["true", "false"]),
                random_moment(rng, 2024).strftime(ts),
            ])


def write_snapshot_run(lake, prefix, run_id, day, records, parts, manifest=True, stray_part=None):
    run_dir = lake / prefix / ("dt=" + day) / ("run=" + run_id)
    chunk = (len(records) + parts - 1) // parts
    entries = []
    for n in range(parts):
        key = "%s/dt=%s/run=%s/part-%05d.ndjson" % (prefix, day, run_id, n)
        part = records[n * chunk:(n + 1) * chunk]
        write_ndjson(lake / key, part)
        entries.append({"key": key, "records": len(part), "bytes": (lake / key).stat().st_size, "sha256": "0" * 64})
    if stray_part is not None:
        # A part file the manifest does not list: must not be read.
        write_ndjson(run_dir / ("part-%05d.ndjson" % parts), stray_part)
    if manifest:
        body = {
            "pipeline": prefix, "run_id": run_id, "source_url": "http://127.0.0.1:9090/api/" + prefix,
            "started_at": day + "T10:00:00Z", "finished_at": day + "T10:00:05Z",
            "records": len(records), "parts": entries,
        }
        (run_dir / "_manifest.json").write_text(json.dumps(body, indent=2))


def write_fixture_lake(lake):
    """A deterministic lake; returns facts the tests assert on."""
    rng = random.Random(20261125)
    write_sample_csvs(lake / "data", rng)

    # Snapshots: runs A (older) and B (latest with a manifest), and C, newer
    # but without a manifest (failed or still running), to be ignored.
    day_a, day_b = "2026-11-24", "2026-11-25"
    run_a = uuid7(dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.timezone.utc), rng)
    run_b = uuid7(dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc), rng)
    run_c = uuid7(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.timezone.utc), rng)
    assert run_a < run_b < run_c
    content_a = uuid7(dt.datetime(2026, 11, 24, 10, 1, tzinfo=dt.timezone.utc), rng)
    content_b = uuid7(dt.datetime(2026, 11, 25, 10, 1, tzinfo=dt.timezone.utc), rng)
    content_c = uuid7(dt.datetime(2026, 11, 25, 12, 1, tzinfo=dt.timezone.utc), rng)

    def users(run_id, day, n, status_bias):
        out = []
        for i in range(1, n + 1):
            out.append({
                "user_id": "user_%d" % i, "age": 18 + (i * 7) % 65,
                "status": status_bias if i % 5 == 0 else ["free", "paid", "trial"][i % 3],
                "country": ["US", "BR", "IT", "FR"][i % 4],
                "created_at": "2023-%02d-%02dT00:00:00Z" % (1 + i % 12, 1 + i % 28),
                "_extracted_at": day + "T10:00:01.000001Z", "_run_id": run_id,
                "_source_url": "http://127.0.0.1:9090/api/users",
            })
        return out

    def content(run_id, day, n, shift):
        out = []
        for i in range(1, n + 1):
            out.append({
                "content_id": "content_%d" % i, "media_type": MEDIA_TYPES[(i + shift) % 3],
                "prayer_type": PRAYER_TYPES[(i + shift) % 6],
                "created_at": "2024-%02d-%02dT00:00:00Z" % (1 + i % 12, 1 + i % 28),
                "_extracted_at": day + "T10:00:02Z", "_run_id": run_id,
                "_source_url": "http://127.0.0.1:9090/api/content", "_extra_key": {"x": 1},
            })
        return out

    write_snapshot_run(lake, "users", run_a, day_a, users(run_a, day_a, 250, "trial"), parts=1)
    write_snapshot_run(lake, "users", run_b, day_b, users(run_b, day_b, 300, "paid"), parts=2,
                       stray_part=[{"user_id": "user_stray", "age": 40, "status": "free", "country": "US",
                                    "created_at": "2023-01-01T00:00:00Z"}])
    write_snapshot_run(lake, "users", run_c, day_b, users(run_c, day_b, 400, "free")[300:], parts=1,
                       manifest=False)
    write_snapshot_run(lake, "content", content_a, day_a, content(content_a, day_a, 1000, 0), parts=1)
    write_snapshot_run(lake, "content", content_b, day_b, content(content_b, day_b, 1000, 1), parts=3)
    write_snapshot_run(lake, "content", content_c, day_b, content(content_c, day_b, 1200, 2), parts=1,
                       manifest=False)
    # Pulled API events live under api_events/, never events/: not read.
    write_ndjson(lake / "api_events" / ("dt=" + day_b) / "run=x" / "part-00000.ndjson", [{"event_id": "api-1"}])

    # Webhook events over two days (and a quiet day between for the revenue spine).
    events = []
    start = dt.datetime(2026, 11, 23, 0, 0, tzinfo=dt.timezone.utc)
    for n in range(400):
        day_offset = rng.choice([0, 0, 2, 2, 2])  # 2026-11-23 and 2026-11-25; 11-24 quiet
        when = start + dt.timedelta(days=day_offset, hours=rng.choice([3, 9, 21]), seconds=rng.randrange(3600))
        kind = rng.choices(["click", "view", "purchase", "pray", "share", "like", "signup"], [3, 4, 2, 2, 1, 2, 1])[0]
        user_n = rng.randint(1, 300)
        if kind == "purchase":
            props = {"amount": round(rng.uniform(5, 500), rng.choice([1, 2, 6])),
                     "product_id": "prod_%d" % rng.randint(1, 100)}
        elif kind in ("view", "like", "share"):
            c = rng.randint(1, 1000)
            props = {"content_id": "content_%d" % c, "media_type": MEDIA_TYPES[(c + 1) % 3],
                     "prayer_type": PRAYER_TYPES[(c + 1) % 6]}
        else:
            props = {}
        if n % 17 == 0:
            props["unknown_extra"] = {"nested": [1, 2]}
        event = {
            "event_id": uuid4(rng), "user_id": "user_%d" % user_n, "event_type": kind,
            "source": rng.choice(SOURCES), "timestamp": rfc3339(when), "properties": props,
            "user": {"user_id": "user_%d" % user_n, "age": 30, "status": "paid", "country": "BR",
                     "created_at": "2023-05-01T00:00:00Z"},
            "received_at": rfc3339(when + dt.timedelta(milliseconds=rng.randrange(900)), micros=True),
        }
        if n % 9 == 0:
            del event["user"]
        if n == 5:
            # The upstream's quirk, should it ever reach the lake: user_id is the user object.
            event["user_id"] = dict(event.get("user") or {"user_id": "user_%d" % user_n})
        events.append(event)

    files = defaultdict(list)
    for i, event in enumerate(events):
        when = dt.datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        files[(when.strftime("%Y-%m-%d"), when.strftime("%H"), str(i % 2))].append(event)
    duplicates = 0
    for i, event in enumerate(events[:60:4]):
        # Lands twice: a replayed batch in another file, received later.
        again = dict(event, received_at=rfc3339(dt.datetime(2026, 11, 26, 0, 0, i), micros=True))
        when = dt.datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        files[(when.strftime("%Y-%m-%d"), when.strftime("%H"), "replay")].append(again)
        duplicates += 1
    first_key = sorted(files)[0]
    files[first_key].append(dict(files[first_key][0]))  # and twice in one file
    for (day, hour, name), batch in sorted(files.items()):
        write_ndjson(lake / "events" / ("dt=" + day) / ("hour=" + hour) / ("batch-%s.ndjson" % name), batch)

    # Storage internals: never read (invalid on purpose).
    internals = lake / ".vesper" / "tmp" / "events" / "dt=2026-11-25" / "hour=03"
    internals.mkdir(parents=True)
    (internals / "half-written.ndjson").write_text('{"event_id": "broken", ')
    (lake / ".vesper" / "users").mkdir(parents=True)
    (lake / ".vesper" / "users" / "_manifest.json").write_text("not json")

    signups = sum(1 for e in events if e["event_type"] == "signup")
    return {
        "users_run": run_b, "content_run": content_b, "ignored_run": run_c, "older_run": run_a,
        "users_in_latest": 300, "content_in_latest": 1000,
        "events_unique_non_signup": len(events) - signups, "signups": signups,
        "duplicates": duplicates + 1,
    }


def write_empty_lake(lake, csv_source_dir):
    """CSVs only, plus an unfinished first users run and an empty events/ dir."""
    (lake / "data").mkdir(parents=True)
    for name in ("users.csv", "sessions.csv", "content.csv"):
        shutil.copyfile(str(csv_source_dir / name), str(lake / "data" / name))
    (lake / "events").mkdir()
    write_snapshot_run(lake, "users", "0190a000-0000-7000-8000-000000000000", "2026-11-25",
                       [{"user_id": "user_1", "age": 30, "status": "free", "country": "US",
                         "created_at": "2023-01-01T00:00:00Z"}], parts=1, manifest=False)


# --------------------------------------------------------------------------
# Independent computations from the lake files (plain Python)


def age_group(age):
    for low, high, name in ((18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"),
                            (45, 54, "45-54"), (55, 64, "55-64")):
        if low <= age <= high:
            return name
    return "65+" if age >= 65 else None


def expected_top5(data_dir):
    with open(data_dir / "users.csv", newline="") as f:
        ages = {int(r["id"]): int(r["age"]) for r in csv.DictReader(f)}
    with open(data_dir / "content.csv", newline="") as f:
        prayer = {int(r["id"]): r["prayer_type"] for r in csv.DictReader(f)}
    counts = Counter()
    with open(data_dir / "sessions.csv", newline="") as f:
        for r in csv.DictReader(f):
            user, item = int(r["user_id"]), int(r["content_id"])
            if user in ages and item in prayer and age_group(ages[user]) is not None:
                counts[(age_group(ages[user]), prayer[item])] += 1
    types = sorted(set(PRAYER_TYPES) | set(prayer.values()))
    rows = []
    for group in AGE_GROUPS:
        ranked = sorted(types, key=lambda t: (-counts[(group, t)], t))[:5]
        rows += [[group, t, counts[(group, t)], rank] for rank, t in enumerate(ranked, 1)]
    return rows


def parse_time(text):
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.timezone.utc)


def lake_events(lake):
    """Unique (by event_id, first received) non-signup events of the lake's events/."""
    chosen = {}
    for path in sorted((lake / "events").rglob("*.ndjson")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["event_type"] == "signup":
                    continue
                user = event["user_id"]
                event["user_id"] = user["user_id"] if isinstance(user, dict) else user
                key = (parse_time(event["received_at"]), str(path))
                if event["event_id"] not in chosen or key < chosen[event["event_id"]][0]:
                    chosen[event["event_id"]] = (key, event)
    return [e for _, e in chosen.values()]


def cents(value):
    return Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def expected_marts(events):
    dau = defaultdict(set)
    dau_events = Counter()
    engagement = defaultdict(lambda: {"view": 0, "like": 0, "share": 0, "users": set(), "items": set()})
    revenue = defaultdict(lambda: [0, set(), 0.0])
    days = set()
    for e in events:
        day = parse_time(e["timestamp"]).date().isoformat()
        days.add(day)
        dau[(day, e["source"])].add(e["user_id"])
        dau_events[(day, e["source"])] += 1
        p = e.get("properties") or {}
        if e["event_type"] in ("view", "like", "share"):
            g = engagement[(p.get("prayer_type"), p.get("media_type"))]
            g[e["event_type"]] += 1
            g["users"].add(e["user_id"])
            g["items"].add(p.get("content_id"))
        if e["event_type"] == "purchase":
            r = revenue[day]
            r[0] += 1
            r[1].add(e["user_id"])
            r[2] += float(p["amount"])
    dau_rows = sorted([d, s, len(u), dau_events[(d, s)]] for (d, s), u in dau.items())
    eng_rows = sorted(
        ([pt, mt, g["view"], g["like"], g["share"], len(g["users"]), len({i for i in g["items"] if i})]
         for (pt, mt), g in engagement.items()), key=lambda r: (str(r[0]), str(r[1])))
    rev_rows = []
    if days:
        day = dt.date.fromisoformat(min(days))
        while day <= dt.date.fromisoformat(max(days)):
            n, buyers, total = revenue.get(day.isoformat(), [0, set(), 0.0])
            rev_rows.append([day.isoformat(), n, len(buyers), total])
            day += dt.timedelta(days=1)
    return dau_rows, eng_rows, rev_rows


def latest_manifested_run(lake, prefix):
    runs = []
    for manifest in (lake / prefix).glob("dt=*/run=*/_manifest.json"):
        runs.append((manifest.parent.name[len("run="):], manifest))
    if not runs:
        return None
    run_id, manifest = max(runs)
    body = json.loads(manifest.read_text())
    ids = []
    key = "user_id" if prefix == "users" else "content_id"
    for part in body["parts"]:
        with open(manifest.parent / part["key"].rsplit("/", 1)[-1], encoding="utf-8") as f:
            ids += [json.loads(line)[key] for line in f if line.strip()]
    return {"run_id": run_id, "records": body["records"], "ids": sorted(set(ids))}


# --------------------------------------------------------------------------
# Running things


def run_analytics(args, env, log_name, workdir):
    """Runs the real command; returns (exit code, stdout+stderr text)."""
    cmd = [sys.executable, str(ANALYTICS)] + args
    print("  $ " + " ".join(cmd), flush=True)
    started = time.time()
    result = subprocess.run(cmd, cwd=str(workdir), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = result.stdout.decode("utf-8", "replace")
    (workdir / (log_name + ".log")).write_text(out)
    print("    exit %d in %.1fs (log: %s)" % (result.returncode, time.time() - started,
                                              workdir / (log_name + ".log")), flush=True)
    return result.returncode, out


QUERY_SCRIPT = r"""
import json, sys
import duckdb
db, queries = sys.argv[1], json.loads(sys.argv[2])
con = duckdb.connect(db, read_only=True)
out = [[list(r) for r in con.execute(q).fetchall()] for q in queries]
print(json.dumps(out, default=str))
"""

COMPARE_SCRIPT = r"""
import json, sys
import duckdb
con = duckdb.connect()
def lit(text):
    return "'" + text.replace("'", "''") + "'"
con.execute("attach " + lit(sys.argv[1]) + " as a (read_only)")
con.execute("attach " + lit(sys.argv[2]) + " as b (read_only)")
ignore = set(json.loads(sys.argv[3]))
tables = [r[0] for r in con.execute(
    "select table_name from duckdb_tables() where database_name = 'a' and schema_name = 'main' order by 1").fetchall()]
other = [r[0] for r in con.execute(
    "select table_name from duckdb_tables() where database_name = 'b' and schema_name = 'main' order by 1").fetchall()]
report = {"tables": tables, "other_tables": other, "differences": {}}
for t in tables:
    if t not in other:
        continue
    cols = [r[0] for r in con.execute(
        "select column_name from duckdb_columns() where database_name = 'a' and schema_name = 'main' "
        "and table_name = ? order by column_index", [t]).fetchall() if r[0] not in ignore]
    sel = ", ".join('"%s"' % c for c in cols)
    n_a = con.execute(f'select count(*) from a.main."{t}"').fetchone()[0]
    only_a = con.execute(f'select count(*) from (select {sel} from a.main."{t}" except all select {sel} from b.main."{t}")').fetchone()[0]
    only_b = con.execute(f'select count(*) from (select {sel} from b.main."{t}" except all select {sel} from a.main."{t}")').fetchone()[0]
    report["differences"][t] = [n_a, only_a, only_b]
print(json.dumps(report))
"""


class Dbt:
    """Python in dbt's uv environment, for reading results files."""

    def __init__(self):
        self.uv = analytics.find_uv()
        self.env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")

    def python(self, script, *args):
        result = subprocess.run(
            [self.uv, "run", "--frozen", "--no-sync", "--project", str(DBT_DIR), "python", "-c", script]
            + list(args), cwd=str(DBT_DIR), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if result.returncode != 0:
            raise RuntimeError("query failed: " + result.stderr.decode("utf-8", "replace")[-2000:])
        return json.loads(result.stdout.decode().strip().splitlines()[-1])

    def query(self, db, *queries):
        return self.python(QUERY_SCRIPT, str(db), json.dumps(list(queries)))

    def compare(self, db_a, db_b, ignore_columns):
        return self.python(COMPARE_SCRIPT, str(db_a), str(db_b), json.dumps(ignore_columns))


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, server, workdir):
        self.server = server
        self.port = free_port()
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.log = open(workdir / "moto.log", "wb")
        self.proc = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("moto_server exited with %s; see %s" % (self.proc.returncode, workdir / "moto.log"))
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=2) as r:
                    if r.status < 500:
                        return
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("moto_server did not answer on %s within 30 s" % self.endpoint)
            time.sleep(0.2)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


UPLOAD_SCRIPT = r"""
import os, sys
import boto3
endpoint, bucket, prefix, root = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
s3.create_bucket(Bucket=bucket)
n = 0
for dirpath, dirnames, filenames in os.walk(root):
    for name in filenames:
        path = os.path.join(dirpath, name)
        key = prefix + os.path.relpath(path, root).replace(os.sep, "/")
        s3.upload_file(path, bucket, key)
        n += 1
print(n)
"""


# --------------------------------------------------------------------------
# The tests


def check_cli_errors(checks, env, workdir):
    code, out = run_analytics(["--lake", str(workdir / "no-such-lake")], env, "cli-missing-lake", workdir)
    checks.check("analytics.py: a missing lake exits 2 with a clear message",
                 code == 2 and "no lake directory" in out, out[-500:])
    code, out = run_analytics(["--lake", "s3://bucket", "--target", "local"], env, "cli-target-mismatch", workdir)
    checks.check("analytics.py: an S3 lake with --target local exits 2", code == 2 and "--target s3" in out, out[-500:])
    code, out = run_analytics(["--help"], env, "cli-help", workdir)
    checks.check("analytics.py --help documents targets, env vars and exit codes",
                 code == 0 and "VESPER_LAKE" in out and "exit codes" in out and "AWS_ENDPOINT_URL" in out, out[-500:])


def check_results(checks, dbt, db, lake, label, fixture):
    """Compares a results file built from `lake` with independent computations."""
    top5, events_n, signups_n, dau, eng, rev, dims = dbt.query(
        db,
        "select age_group, prayer_type, session_count, age_group_rank from top_5_prayer_types_per_age_group "
        "order by age_group, age_group_rank",
        "select count(*), count(distinct event_id) from stg_vesper__events",
        "select count(*) from stg_vesper__events where event_type = 'signup'",
        "select cast(event_date as varchar), source, active_users, events from fct_daily_active_users order by all",
        "select prayer_type, media_type, views, likes, shares, engaged_users, content_items "
        "from fct_content_engagement order by prayer_type nulls first, media_type nulls first",
        "select cast(revenue_date as varchar), purchases, paying_users, cast(revenue as varchar) "
        "from fct_daily_revenue order by 1",
        "select 'users', snapshot_run_id, count(*), list(user_id order by user_id) from dim_users group by all "
        "union all select 'content', snapshot_run_id, count(*), list(content_id order by content_id) "
        "from dim_content group by all",
    )
    checks.equal("%s: top_5_prayer_types_per_age_group equals the csv-module computation" % label,
                 top5, expected_top5(lake / "data"))

    events = lake_events(lake)
    checks.equal("%s: stg_vesper__events has one row per unique non-signup event" % label,
                 events_n[0], [len(events), len(events)])
    checks.equal("%s: no signup in stg_vesper__events" % label, signups_n[0][0], 0)
    exp_dau, exp_eng, exp_rev = expected_marts(events)
    checks.equal("%s: fct_daily_active_users equals the Python computation" % label, dau, exp_dau)
    checks.equal("%s: fct_content_engagement equals the Python computation" % label,
                 sorted(eng, key=lambda r: (str(r[0]), str(r[1]))), exp_eng)
    rev_ok = len(rev) == len(exp_rev) and all(
        a[:3] == e[:3] and Decimal(a[3]) == cents(e[3]) for a, e in zip(rev, exp_rev))
    checks.check("%s: fct_daily_revenue equals the Python computation (every day, cents)" % label, rev_ok,
                 "got %s\n expected %s" % (rev, [e[:3] + [str(cents(e[3]))] for e in exp_rev]))

    by_dim = {r[0]: r for r in dims}
    for prefix in ("users", "content"):
        latest = latest_manifested_run(lake, prefix)
        got = by_dim.get(prefix)
        if latest is None:
            checks.check("%s: dim_%s is empty without a manifested run" % (label, prefix), got is None, got)
            continue
        checks.check("%s: dim_%s holds exactly the latest manifested run %s" % (label, prefix, latest["run_id"]),
                     got is not None and got[1] == latest["run_id"] and got[2] == latest["records"]
                     and got[3] == latest["ids"],
                     "got run %s with %s rows; expected %s with %s" % (
                         got and got[1], got and got[2], latest["run_id"], latest["records"]))

    if fixture:
        checks.equal("%s: the fixture's duplicates and signups were dropped" % label,
                     events_n[0][0], fixture["events_unique_non_signup"])
        users = by_dim.get("users") or [None, None, 0, []]
        checks.check("%s: dim_users comes from run B, not the older run A nor the unmanifested run C" % label,
                     users[1] == fixture["users_run"] and users[2] == fixture["users_in_latest"]
                     and "user_301" not in users[3] and "user_stray" not in users[3], users[:3])
        content = by_dim.get("content") or [None, None, 0, []]
        checks.check("%s: dim_content comes from run B (3 parts), not the unmanifested run C" % label,
                     content[1] == fixture["content_run"] and content[2] == fixture["content_in_latest"],
                     content[:3])
        checks.check("%s: fct_daily_revenue has a zero row for the quiet day" % label,
                     any(r[0] == "2026-11-24" and r[1] == 0 and Decimal(r[3]) == 0 for r in rev), rev)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", help="use this lake directory instead of writing a fixture lake")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, results)")
    args = parser.parse_args(argv)
    started = time.time()
    checks = Checks()

    moto_server = os.environ.get("VESPER_MOTO_SERVER", "")
    moto_python = Path(moto_server).parent / "python" if moto_server else None
    if not moto_server or not os.access(moto_server, os.X_OK) or not moto_python.exists():
        print("run_tests: VESPER_MOTO_SERVER must name moto's moto_server executable, with boto3 in the same\n"
              "  virtual environment (its bin/python). Install both with scripts/bootstrap-tools and export\n"
              "  what it prints:  eval \"$(scripts/bootstrap-tools)\"   (got VESPER_MOTO_SERVER=%r)" % moto_server,
              file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="vesper-dbt-tests-"))
    print("run_tests: working in %s" % workdir, flush=True)
    env = dict(os.environ)
    for name in ("VESPER_LAKE", "VESPER_DUCKDB_PATH", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    # dbt's artefacts and logs go to the temporary directory too, so a test run
    # never disturbs dbt/target or a concurrent build.
    env["DBT_TARGET_PATH"] = str(workdir / "dbt-target")
    env["DBT_LOG_PATH"] = str(workdir / "dbt-logs")
    moto = None
    default_results = analytics.DEFAULT_RESULTS
    before = default_results.stat().st_mtime if default_results.exists() else None
    try:
        if args.lake:
            lake = Path(args.lake).resolve()
            fixture = None
            print("run_tests: using the lake %s" % lake, flush=True)
        else:
            lake = workdir / "lake"
            fixture = write_fixture_lake(lake)
            print("run_tests: wrote a fixture lake in %s (%.1fs)" % (lake, time.time() - started), flush=True)

        check_cli_errors(checks, env, workdir)

        # 1. local target on the lake
        local_db = workdir / "local" / "dbt.duckdb"
        code, out = run_analytics(["--lake", str(lake), "--results", str(local_db)], env, "build-local", workdir)
        built_local = checks.check("dbt build, target local, on the lake passes (all data tests)", code == 0,
                                   out[-3000:])
        dbt = Dbt()
        if built_local:
            checks.check("analytics.py prints the top-5 table", "top_5_prayer_types_per_age_group" in out
                         and "age_group  age_group_rank  prayer_type" in out and "65+" in out, out[-1500:])
            check_results(checks, dbt, local_db, lake, "local", fixture)

        # 2. local target on a lake with only the CSVs
        empty_lake = workdir / "empty-lake"
        write_empty_lake(empty_lake, lake / "data")
        empty_db = workdir / "empty" / "dbt.duckdb"
        code, out = run_analytics(["--lake", str(empty_lake), "--results", str(empty_db)], env, "build-empty", workdir)
        if checks.check("dbt build on a lake with no events and no manifested snapshot passes", code == 0,
                        out[-3000:]):
            counts = dbt.query(empty_db, *["select '%s', count(*) from %s" % (m, m) for m in EVENT_MODELS + DIM_MODELS]
                               + ["select 'top_5', count(*) from top_5_prayer_types_per_age_group"])
            counts = dict(r[0] for r in counts)
            checks.equal("empty lake: event and dim models are empty", {m: counts[m] for m in EVENT_MODELS + DIM_MODELS},
                         {m: 0 for m in EVENT_MODELS + DIM_MODELS})
            checks.equal("empty lake: top_5 still has 30 rows", counts["top_5"], 30)

        # 3. s3 target against moto: the lake at the bucket's root, and the
        #    CSV-only lake under a prefix (s3://bucket/prefix, and globs that
        #    match nothing in S3).
        moto = Moto(moto_server, workdir)
        print("run_tests: moto listening on %s" % moto.endpoint, flush=True)
        for root, prefix in ((lake, ""), (empty_lake, "lakes/empty/")):
            upload = subprocess.run([str(moto_python), "-c", UPLOAD_SCRIPT, moto.endpoint, BUCKET, prefix, str(root)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            if not checks.check("the %s uploads to s3://%s/%s" % (root.name, BUCKET, prefix),
                                upload.returncode == 0, upload.stderr.decode()[-2000:]):
                raise RuntimeError("upload failed")
        s3_env = dict(env, AWS_ENDPOINT_URL=moto.endpoint, AWS_ACCESS_KEY_ID="test",
                      AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
        for name, lake_url, db, local in (
            ("s3", "s3://" + BUCKET, workdir / "s3" / "dbt.duckdb", local_db),
            ("s3-empty", "s3://%s/lakes/empty/" % BUCKET, workdir / "s3-empty" / "dbt.duckdb", empty_db),
        ):
            code, out = run_analytics(["--lake", lake_url, "--target", "s3", "--results", str(db)],
                                      s3_env, "build-" + name, workdir)
            if not checks.check("dbt build, target s3 (moto), on %s passes" % lake_url, code == 0, out[-3000:]):
                continue
            if not local.exists():
                continue
            report = dbt.compare(local, db, ["lake_file"])
            checks.equal("%s: same tables as the local build" % lake_url, report["other_tables"], report["tables"])
            bad = {t: d for t, d in report["differences"].items() if d[1] or d[2]}
            checks.check("%s: every table equals the local build's (%d tables)" % (lake_url, len(report["tables"])),
                         not bad, "differing tables [rows, only-local, only-s3]: %s" % bad)
            if name == "s3":
                from_s3 = dbt.query(db, "select count(*) from stg_vesper__events where lake_file like 's3://%'")
                checks.check("%s: events were read from S3" % lake_url,
                             from_s3[0][0][0] > 0 or not lake_events(lake), from_s3)

        after = default_results.stat().st_mtime if default_results.exists() else None
        checks.equal("results/dbt.duckdb was left alone", after, before)
    except Exception as err:  # a harness error is a failure too, with its cause
        checks.fail("test harness", "".join(traceback.format_exception(type(err), err, err.__traceback__))[-3000:])
    finally:
        if moto is not None:
            moto.stop()
        if args.keep or checks.failed:
            print("run_tests: kept %s (logs, results)" % workdir)
        else:
            shutil.rmtree(str(workdir), ignore_errors=True)

    print("run_tests: %.0fs" % (time.time() - started))
    if checks.failed:
        print("run_tests: FAILED: " + "; ".join(checks.failed))
    print("%d passed, %d failed" % (checks.passed, len(checks.failed)))
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
