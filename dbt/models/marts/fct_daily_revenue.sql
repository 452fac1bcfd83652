-- Revenue from purchase events per UTC day. Every day from the first to the
-- last day with any event has a row (0 when nothing was bought), so a chart
-- shows the quiet days. Amounts are summed exactly as sent, then rounded to
-- cents.
with events as (
    select * from {{ ref('stg_vesper__events') }}
),

bounds as (
    select min(event_date) as first_day, max(event_date) as last_day from events
),

days as (
    select cast(unnest(generate_series(
        cast(first_day as timestamp), cast(last_day as timestamp), interval 1 day
    )) as date) as revenue_date
    from bounds
    where first_day is not null
),

purchases as (
    select
        event_date,
        count(*) as purchases,
        count(distinct user_id) as paying_users,
        sum(amount) as revenue
    from events
    where event_type = 'purchase'
    group by event_date
)

select
    days.revenue_date,
    coalesce(purchases.purchases, 0) as purchases,
    coalesce(purchases.paying_users, 0) as paying_users,
    cast(round(coalesce(purchases.revenue, 0), 2) as decimal(18, 2)) as revenue,
    cast(round(purchases.revenue / purchases.purchases, 2) as decimal(18, 2)) as average_order_value
from days
left join purchases on purchases.event_date = days.revenue_date
order by days.revenue_date
