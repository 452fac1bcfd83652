{#
  Reading the vesper lake.

  The lake root comes from VESPER_LAKE: an absolute directory path (target
  local) or s3://bucket[/prefix] (target s3). analytics.py resolves it, so
  nothing here depends on the working directory.

  The sources (models/sources.yml) declare where each input lives (meta
  lake_path / lake_prefix) and its raw columns with their DuckDB types; the
  macros below read them from the graph, so one place describes the lake.

  DuckDB fails on a glob that matches no file, and a young lake has no
  events and no snapshots yet. So every glob is first checked with glob() at
  compile time (run_query), and a typed empty relation stands in for
  missing files: models then build with zero rows instead of failing.

  Only paths under the lake's documented prefixes (data/, events/, users/,
  content/) are read; the storage internals in .vesper/ never are.
#}

{% macro lake_root() -%}
  {%- set raw = env_var('VESPER_LAKE', '') | trim -%}
  {%- if raw == '' -%}
    {{ exceptions.raise_compiler_error(
        "VESPER_LAKE is not set. Point it at the lake: an absolute directory path "
        ~ "(target local) or s3://bucket[/prefix] (target s3). "
        ~ "`python3 dbt/analytics.py --lake ...` sets it for you.") }}
  {%- endif -%}
  {%- if raw.startswith('s3://') -%}
    {%- set root = raw.rstrip('/') -%}
    {%- if root == 's3:/' or root == 's3:' -%}
      {{ exceptions.raise_compiler_error("VESPER_LAKE=" ~ raw ~ " names no bucket; expected s3://bucket[/prefix]") }}
    {%- endif -%}
    {%- if target.name == 'local' -%}
      {{ exceptions.raise_compiler_error(
          "VESPER_LAKE=" ~ raw ~ " is an S3 lake but the target is 'local'; use --target s3") }}
    {%- endif -%}
  {%- elif raw.startswith('/') -%}
    {%- set root = raw.rstrip('/') -%}
    {%- if target.name == 's3' -%}
      {{ exceptions.raise_compiler_error(
          "VESPER_LAKE=" ~ raw ~ " is a directory but the target is 's3'; "
          ~ "give s3://bucket[/prefix] or use --target local") }}
    {%- endif -%}
  {%- else -%}
    {{ exceptions.raise_compiler_error(
        "VESPER_LAKE=" ~ raw ~ " must be an absolute directory path or s3://bucket[/prefix] "
        ~ "(a relative path would depend on the working directory)") }}
  {%- endif -%}
  {{- return(root) -}}
{%- endmacro %}


{# A SQL string literal. #}
{% macro lake_quote(text) -%}
  {{- return("'" ~ (text | string | replace("'", "''")) ~ "'") -}}
{%- endmacro %}


{# The full location of `relative_path` (a path or a glob) in the lake. #}
{% macro lake_location(relative_path) -%}
  {{- return(lake_root() ~ '/' ~ (relative_path | string).lstrip('/')) -}}
{%- endmacro %}


{# The files matching a full location glob, sorted; [] when none. #}
{% macro lake_glob(location) -%}
  {%- set result = run_query("select file from glob(" ~ lake_quote(location) ~ ") order by file") -%}
  {{- return(result.columns[0].values() | list) -}}
{%- endmacro %}


{# The graph node of source(source_name, table_name). #}
{% macro lake_source_node(source_name, table_name) -%}
  {%- for node in graph.sources.values() -%}
    {%- if node.source_name == source_name and node.name == table_name -%}
      {{- return(node) -}}
    {%- endif -%}
  {%- endfor -%}
  {{ exceptions.raise_compiler_error("no source " ~ source_name ~ "." ~ table_name ~ " in models/sources.yml") }}
{%- endmacro %}


{# A meta key of a source table, falling back to its source's. #}
{% macro lake_source_meta(node, key) -%}
  {%- set meta = node.config.meta if (node.config and node.config.meta) else (node.meta or {}) -%}
  {%- if key not in meta -%}
    {{ exceptions.raise_compiler_error("source " ~ node.source_name ~ "." ~ node.name ~ " has no meta." ~ key) }}
  {%- endif -%}
  {{- return(meta[key]) -}}
{%- endmacro %}


{# [(name, type)] of the columns declared on a source table, in order. #}
{% macro lake_source_columns(node) -%}
  {%- set columns = [] -%}
  {%- for column in node.columns.values() -%}
    {%- if not column.data_type -%}
      {{ exceptions.raise_compiler_error("source column " ~ node.name ~ "." ~ column.name ~ " needs a data_type") }}
    {%- endif -%}
    {%- do columns.append((column.name, column.data_type)) -%}
  {%- endfor -%}
  {{- return(columns) -}}
{%- endmacro %}


{# A relation with these [(name, type)] columns and no row. #}
{% macro lake_empty_relation(columns) -%}
  (select
  {%- for name, type in columns %}
    cast(null as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
  {%- endfor %}
  where false)
{%- endmacro %}


{# DuckDB's columns={...} argument for read_json. #}
{% macro lake_json_columns(columns) -%}
  {%- set parts = [] -%}
  {%- for name, type in columns -%}
    {%- do parts.append(lake_quote(name) ~ ": " ~ lake_quote(type)) -%}
  {%- endfor -%}
  {{- return("{" ~ parts | join(", ") ~ "}") -}}
{%- endmacro %}


{#
  A CSV file of the lake (meta lake_path), read as text with its header: the
  declared columns are selected by name, so a missing column fails loudly.
  Staging models cast.
#}
{% macro lake_csv(source_name, table_name) -%}
  {%- set _dependency = source(source_name, table_name) -%}
  {%- if not execute -%}{{ return("(select 1)") }}{%- endif -%}
  {%- set node = lake_source_node(source_name, table_name) -%}
  {%- set columns = lake_source_columns(node) -%}
  {%- set location = lake_location(lake_source_meta(node, 'lake_path')) -%}
  (select
  {%- for name, type in columns %}
    cast({{ adapter.quote(name) }} as {{ type }}) as {{ adapter.quote(name) }}{{ "," if not loop.last }}
  {%- endfor %}
  from read_csv({{ lake_quote(location) }}, header = true, delim = ',', quote = '"', all_varchar = true))
{%- endmacro %}


{#
  NDJSON files of the lake matching a glob (meta lake_path), with the
  declared columns, `filename`, and the Hive partition columns of meta
  hive_types ({name: type}). An empty typed relation when nothing matches.
#}
{% macro lake_ndjson(source_name, table_name) -%}
  {%- set _dependency = source(source_name, table_name) -%}
  {%- if not execute -%}{{ return("(select 1)") }}{%- endif -%}
  {%- set node = lake_source_node(source_name, table_name) -%}
  {%- set columns = lake_source_columns(node) -%}
  {%- set hive_types = lake_source_meta(node, 'hive_types') -%}
  {%- set location = lake_location(lake_source_meta(node, 'lake_path')) -%}
  {%- set all_columns = columns + [('filename', 'VARCHAR')] -%}
  {%- for name, type in hive_types.items() -%}
    {%- do all_columns.append((name, type)) -%}
  {%- endfor -%}
  {%- if lake_glob(location) | length == 0 -%}
    {{- log("lake: no file matches " ~ location ~ "; " ~ source_name ~ "." ~ table_name ~ " is empty", info=true) -}}
    {{- lake_empty_relation(all_columns) -}}
  {%- else -%}
    {%- set hive = [] -%}
    {%- for name, type in hive_types.items() -%}
      {%- do hive.append(lake_quote(name) ~ ": " ~ lake_quote(type)) -%}
    {%- endfor -%}
    (select {% for name, type in all_columns %}{{ adapter.quote(name) }}{{ ", " if not loop.last }}{% endfor %}
    from read_json({{ lake_quote(location) }},
        format = 'newline_delimited',
        columns = {{ lake_json_columns(columns) }},
        filename = true,
        hive_partitioning = true,
        hive_types = {{ "{" ~ hive | join(", ") ~ "}" }}))
  {%- endif -%}
{%- endmacro %}


{#
  The latest manifested run of the batch snapshots under `prefix`
  (<prefix>/dt=YYYY-MM-DD/run=<run_id>/_manifest.json): the greatest run id
  that has a manifest (run ids sort by time). A run directory without a
  manifest is a failed or unfinished run and is ignored.
  Returns none when there is none, else a dict with run_id, manifest,
  records (as the manifest says) and part_files: the part files the
  manifest lists, located in the run's directory (keys may or may not
  include the lake's own S3 prefix, so only their file names are used).
#}
{% macro lake_latest_run(prefix) -%}
  {%- set pattern = lake_location(prefix ~ '/dt=*/run=*/_manifest.json') -%}
  {%- set runs = run_query(
      "select file, regexp_extract(file, '/run=([^/]+)/_manifest\\.json$', 1) as run_id"
      ~ " from glob(" ~ lake_quote(pattern) ~ ") order by run_id desc, file desc limit 1") -%}
  {%- if runs.rows | length == 0 -%}
    {{- return(none) -}}
  {%- endif -%}
  {%- set manifest = runs.rows[0][0] -%}
  {%- set run_id = runs.rows[0][1] -%}
  {%- set run_dir = manifest[:-('/_manifest.json' | length)] -%}
  {%- set read_manifest = "read_json(" ~ lake_quote(manifest) ~ ", format = 'auto', columns = "
      ~ "{'run_id': 'VARCHAR', 'records': 'BIGINT', "
      ~ "'parts': 'STRUCT(\"key\" VARCHAR, records BIGINT)[]'})" -%}
  {%- set info = run_query("select records, len(coalesce(parts, [])) from " ~ read_manifest) -%}
  {%- set parts = run_query(
      "select regexp_extract(part.key, '[^/]+$') from (select unnest(parts) as part from "
      ~ read_manifest ~ ") order by 1") -%}
  {%- set part_files = [] -%}
  {%- for row in parts.rows -%}
    {%- do part_files.append(run_dir ~ '/' ~ row[0]) -%}
  {%- endfor -%}
  {{- return({
      'run_id': run_id,
      'manifest': manifest,
      'records': info.rows[0][0],
      'part_files': part_files,
  }) -}}
{%- endmacro %}


{#
  The records of the latest manifested snapshot of a source (meta
  lake_prefix), with the declared columns plus `snapshot_run_id`; an empty
  typed relation when no run has a manifest yet.
#}
{% macro lake_latest_snapshot(source_name, table_name) -%}
  {%- set _dependency = source(source_name, table_name) -%}
  {%- if not execute -%}{{ return("(select 1)") }}{%- endif -%}
  {%- set node = lake_source_node(source_name, table_name) -%}
  {%- set columns = lake_source_columns(node) -%}
  {%- set prefix = lake_source_meta(node, 'lake_prefix') -%}
  {%- set run = lake_latest_run(prefix) -%}
  {%- if run is none or run.part_files | length == 0 -%}
    {{- log("lake: no manifested " ~ prefix ~ " snapshot yet; " ~ source_name ~ "." ~ table_name ~ " is empty", info=true) -}}
    {{- lake_empty_relation(columns + [('snapshot_run_id', 'VARCHAR')]) -}}
  {%- else -%}
    {{- log("lake: " ~ prefix ~ " snapshot from run " ~ run.run_id ~ " (" ~ run.part_files | length ~ " parts)", info=true) -}}
    {%- set files = [] -%}
    {%- for file in run.part_files -%}{%- do files.append(lake_quote(file)) -%}{%- endfor -%}
    (select {% for name, type in columns %}{{ adapter.quote(name) }}, {% endfor %}{{ lake_quote(run.run_id) }} as snapshot_run_id
    from read_json([{{ files | join(", ") }}],
        format = 'newline_delimited',
        columns = {{ lake_json_columns(columns) }}))
  {%- endif -%}
{%- endmacro %}
