-- The upstream's content items as of the latest batch snapshot: the greatest
-- run id under content/ that has a manifest. Empty until the first content
-- run completes. One row per content item.
with snapshot as (
    select * from {{ lake_latest_snapshot('vesper', 'content_snapshots') }}
)

select
    content_id,
    media_type,
    prayer_type,
    {{ utc_timestamp('created_at') }} as created_at,
    {{ utc_timestamp('_extracted_at') }} as extracted_at,
    snapshot_run_id,
    _source_url as source_url
from snapshot
qualify row_number() over (partition by content_id order by _extracted_at desc nulls last) = 1
