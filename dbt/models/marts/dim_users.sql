-- The upstream's users as of the latest batch snapshot: the greatest run id
-- under users/ that has a manifest (an unfinished or failed run, without one,
-- is ignored). Empty until the first users run completes. One row per user
-- (should a snapshot repeat a user, the last extracted copy wins).
with snapshot as (
    select * from {{ lake_latest_snapshot('vesper', 'users_snapshots') }}
)

select
    user_id,
    age,
    {{ age_group('age') }} as age_group,
    status,
    {{ normalize_country('country') }} as country,
    {{ utc_timestamp('created_at') }} as created_at,
    {{ utc_timestamp('_extracted_at') }} as extracted_at,
    snapshot_run_id,
    _source_url as source_url
from snapshot
qualify row_number() over (partition by user_id order by _extracted_at desc nulls last) = 1
