-- Engagement with content by prayer type and media type, as the events
-- describe the content item (view, like and share events carry its
-- content_id, media_type and prayer_type). All time.
select
    prayer_type,
    media_type,
    count(*) filter (where event_type = 'view') as views,
    count(*) filter (where event_type = 'like') as likes,
    count(*) filter (where event_type = 'share') as shares,
    count(distinct user_id) as engaged_users,
    count(distinct content_id) as content_items
from {{ ref('stg_vesper__events') }}
where event_type in ('view', 'like', 'share')
group by prayer_type, media_type
order by prayer_type, media_type
