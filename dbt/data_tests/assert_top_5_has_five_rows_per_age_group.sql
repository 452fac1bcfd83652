-- Every age group is in top_5_prayer_types_per_age_group, with exactly five
-- rows. Returns the offending age groups.
with expected as (
    select unnest({{ sql_string_list(var('age_groups')) }}) as age_group
),

actual as (
    select age_group, count(*) as n_rows
    from {{ ref('top_5_prayer_types_per_age_group') }}
    group by age_group
)

select
    coalesce(expected.age_group, actual.age_group) as age_group,
    coalesce(actual.n_rows, 0) as n_rows
from expected
full outer join actual on actual.age_group = expected.age_group
where expected.age_group is null or coalesce(actual.n_rows, 0) <> 5
