-- One row per sample-data session (data/sessions.csv), typed.
with source as (
    select * from {{ lake_csv('hallow', 'sessions') }}
)

select
    cast(id as integer) as session_id,
    cast(user_id as integer) as user_id,
    cast(content_id as integer) as content_id,
    cast(is_complete as boolean) as is_complete,
    cast(created_at as timestamp) as created_at
from source
