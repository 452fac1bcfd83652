-- One row per webhook event (event_id) in the lake, signups excluded, typed,
-- with the purchase and content properties flattened into columns.
--
-- Ingest drops duplicates within a bounded window only, and a WAL replay may
-- rewrite a batch, so the same event_id can be in the lake more than once:
-- the first received copy is kept (then the first by file name, for a
-- deterministic choice).
with source as (
    select * from {{ lake_ndjson('vesper', 'events') }}
),

typed as (
    select
        event_id,
        -- The lake stores the id as a string; the upstream's quirk of sending
        -- the whole user object is understood all the same.
        case
            when json_type(user_id) = 'OBJECT' then user_id ->> 'user_id'
            else user_id ->> '$'
        end as user_id,
        event_type,
        source,
        {{ utc_timestamp('"timestamp"') }} as event_at,
        {{ utc_timestamp('received_at') }} as received_at,
        try_cast(properties ->> 'amount' as double) as amount,
        properties ->> 'product_id' as product_id,
        properties ->> 'content_id' as content_id,
        properties ->> 'media_type' as media_type,
        properties ->> 'prayer_type' as prayer_type,
        try_cast("user" ->> 'age' as integer) as user_age,
        "user" ->> 'status' as user_status,
        {{ normalize_country("(\"user\" ->> 'country')") }} as user_country,
        dt as lake_dt,
        "hour" as lake_hour,
        filename as lake_file
    from source
)

select
    event_id,
    user_id,
    event_type,
    source,
    event_at,
    cast(event_at as date) as event_date,
    received_at,
    amount,
    product_id,
    content_id,
    media_type,
    prayer_type,
    user_age,
    user_status,
    user_country,
    lake_dt,
    lake_hour,
    lake_file
from typed
where event_type is distinct from 'signup'
qualify row_number() over (
    partition by event_id
    order by received_at asc nulls last, lake_file asc
) = 1
