-- In each age group the ranks are exactly 1, 2, 3, 4, 5 (no gap, no
-- repeat), session_count never grows with the rank, and equal counts are
-- ordered by prayer_type. Returns the offending rows.
with top_5 as (
    select * from {{ ref('top_5_prayer_types_per_age_group') }}
),

ranks as (
    select age_group, list(age_group_rank order by age_group_rank) as ranks
    from top_5
    group by age_group
),

ordered as (
    select
        *,
        lag(session_count) over (partition by age_group order by age_group_rank) as previous_count,
        lag(prayer_type) over (partition by age_group order by age_group_rank) as previous_prayer_type
    from top_5
)

select age_group, 'ranks are ' || cast(ranks as varchar) as problem
from ranks
where ranks <> [1, 2, 3, 4, 5]

union all

select age_group, 'rank ' || age_group_rank || ' (' || prayer_type || ') is out of order' as problem
from ordered
where previous_count < session_count
    or (previous_count = session_count and previous_prayer_type >= prayer_type)
