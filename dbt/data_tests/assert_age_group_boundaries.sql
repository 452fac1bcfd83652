-- The age group boundaries: 18 and 24 are in 18-24, 25 in 25-34, ..., 64 in
-- 55-64, 65 and every age above in 65+; under 18 in none. Checked on the
-- macro itself and on the sessions it grouped. Returns the offending cases.
with cases(age, expected) as (
    values
        (17, null), (18, '18-24'), (24, '18-24'),
        (25, '25-34'), (34, '25-34'),
        (35, '35-44'), (44, '35-44'),
        (45, '45-54'), (54, '45-54'),
        (55, '55-64'), (64, '55-64'),
        (65, '65+'), (66, '65+'), (98, '65+'), (120, '65+')
)

select 'macro' as checked, age, expected, {{ age_group('age') }} as actual
from cases
where {{ age_group('age') }} is distinct from expected

union all

select distinct 'sessions' as checked, sessions.age, cases.expected, sessions.age_group as actual
from {{ ref('int_hallow__sessions_enriched') }} as sessions
inner join cases on cases.age = sessions.age
where sessions.age_group is distinct from cases.expected
