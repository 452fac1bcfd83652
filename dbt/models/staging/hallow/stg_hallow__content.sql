-- One row per sample-data content item (data/content.csv), typed.
with source as (
    select * from {{ lake_csv('hallow', 'content') }}
)

select
    cast(id as integer) as content_id,
    media_type,
    prayer_type,
    cast(created_at as timestamp) as created_at
from source
