{#
  Generic test: no two rows share the same values in `columns` (a
  composite key). Nulls compare equal here, as in a GROUP BY.
#}
{% test unique_combination_of_columns(model, columns) %}
select {{ columns | join(", ") }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(", ") }}
having count(*) > 1
{% endtest %}
