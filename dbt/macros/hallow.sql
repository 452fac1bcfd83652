{#
  The age group of an age: 18-24, 25-34, 35-44, 45-54, 55-64, 65+ (both
  ends inclusive: 24 is in 18-24, 25 in 25-34, 65 and up in 65+). Null
  below 18 or for a null age; the tests flag such rows.
#}
{% macro age_group(age) -%}
case
    when {{ age }} between 18 and 24 then '18-24'
    when {{ age }} between 25 and 34 then '25-34'
    when {{ age }} between 35 and 44 then '35-44'
    when {{ age }} between 45 and 54 then '45-54'
    when {{ age }} between 55 and 64 then '55-64'
    when {{ age }} >= 65 then '65+'
end
{%- endmacro %}


{# Country codes: the sample data's `IF` is a typo for Italy, `IT`. #}
{% macro normalize_country(country) -%}
case when {{ country }} = 'IF' then 'IT' else {{ country }} end
{%- endmacro %}


{# A list of strings (e.g. a var) as a DuckDB list literal. #}
{% macro sql_string_list(values) -%}
[{% for value in values %}{{ lake_quote(value) }}{{ ", " if not loop.last }}{% endfor %}]
{%- endmacro %}


{# RFC 3339 text (any offset) as a zone-less UTC timestamp; null if unparsable. #}
{% macro utc_timestamp(text) -%}
timezone('UTC', try_cast({{ text }} as timestamptz))
{%- endmacro %}
