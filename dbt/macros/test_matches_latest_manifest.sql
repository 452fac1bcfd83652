{#
  Generic test for a dimension built from a batch snapshot: it holds the
  latest manifested run of the source's lake_prefix, every row from that run,
  and as many rows as the manifest's `records` (none without a manifest).
  Returns a row per problem.
#}
{% test matches_latest_manifest(model, source_name, table_name) %}
{%- set run = none -%}
{%- if execute -%}
  {%- set node = lake_source_node(source_name, table_name) -%}
  {%- set run = lake_latest_run(lake_source_meta(node, 'lake_prefix')) -%}
{%- endif -%}
{%- set expected_run = lake_quote(run.run_id) if run else 'null' -%}
{%- set expected_rows = (run.records if (run and run.records is not none) else 0) -%}
with actual as (
    select
        count(*) as n_rows,
        count(distinct snapshot_run_id) as n_runs,
        min(snapshot_run_id) as run_id
    from {{ model }}
)

select 'rows: ' || n_rows || ', manifest records: ' || {{ expected_rows }} as problem
from actual
where n_rows <> {{ expected_rows }}

union all

select 'run ' || coalesce(run_id, '(none)') || ' instead of ' || coalesce({{ expected_run }}, '(none)') as problem
from actual
where n_rows > 0 and (n_runs <> 1 or run_id is distinct from {{ expected_run }})
{% endtest %}
