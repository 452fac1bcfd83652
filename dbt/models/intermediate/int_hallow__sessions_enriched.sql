-- One row per sample-data session, with its user's age and age group and its
-- content item's prayer and media types. Inner joins: a session whose user or
-- content item is unknown has no age group or prayer type to count (the
-- relationships tests on stg_hallow__sessions flag such sessions).
select
    sessions.session_id,
    sessions.user_id,
    sessions.content_id,
    sessions.is_complete,
    sessions.created_at,
    users.age,
    {{ age_group('users.age') }} as age_group,
    content.prayer_type,
    content.media_type
from {{ ref('stg_hallow__sessions') }} as sessions
inner join {{ ref('stg_hallow__users') }} as users
    on sessions.user_id = users.user_id
inner join {{ ref('stg_hallow__content') }} as content
    on sessions.content_id = content.content_id
