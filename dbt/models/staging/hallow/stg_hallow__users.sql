-- One row per sample-data user (data/users.csv), typed. The sample data's
-- country typo `IF` becomes `IT`.
with source as (
    select * from {{ lake_csv('hallow', 'users') }}
)

select
    cast(id as integer) as user_id,
    cast(age as integer) as age,
    status,
    {{ normalize_country('country') }} as country,
    cast(created_at as timestamp) as created_at
from source
