-- Daily active users by source: the distinct users with at least one event
-- (signups excluded) on a UTC day, per source. Distinct counts do not add up
-- across sources: a user active on web and android counts once in each.
select
    event_date,
    source,
    count(distinct user_id) as active_users,
    count(*) as events
from {{ ref('stg_vesper__events') }}
group by event_date, source
order by event_date, source
