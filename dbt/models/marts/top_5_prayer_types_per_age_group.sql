-- The five most popular prayer types (by number of sessions) in each age
-- group 18-24, 25-34, 35-44, 45-54, 55-64, 65+.
--
-- * session_count counts all sessions, complete or not.
-- * Exactly five rows per age group: every age group is crossed with every
--   prayer type (the known ones and any seen in the data), so a prayer type
--   with no session in a group counts 0 rather than leaving a hole.
-- * Ranked 1-5 by session_count descending; ties are broken by prayer_type
--   ascending (alphabetical), so the ranking is total and deterministic.
with sessions as (
    select * from {{ ref('int_hallow__sessions_enriched') }}
),

age_groups as (
    select unnest({{ sql_string_list(var('age_groups')) }}) as age_group
),

prayer_types as (
    select unnest({{ sql_string_list(var('prayer_types')) }}) as prayer_type
    union
    select prayer_type from sessions where prayer_type is not null
),

counts as (
    select age_group, prayer_type, count(*) as session_count
    from sessions
    where age_group is not null and prayer_type is not null
    group by age_group, prayer_type
),

ranked as (
    select
        age_groups.age_group,
        prayer_types.prayer_type,
        coalesce(counts.session_count, 0) as session_count,
        row_number() over (
            partition by age_groups.age_group
            order by coalesce(counts.session_count, 0) desc, prayer_types.prayer_type asc
        ) as age_group_rank
    from age_groups
    cross join prayer_types
    left join counts
        on counts.age_group = age_groups.age_group
        and counts.prayer_type = prayer_types.prayer_type
)

select
    age_group,
    prayer_type,
    cast(session_count as bigint) as session_count,
    cast(age_group_rank as integer) as age_group_rank
from ranked
where age_group_rank <= 5
order by age_group, age_group_rank
