//! The sample data of the analytics (docs/compatibility.md, "The lake and the analytics"): three CSVs
//! under `data/` in the lake, generated from a seed with the old files'
//! columns, text formats and distributions, including the `IF` country
//! (a typo for `IT`) that the staging layer must fix.
//!
//! Formats: a header row, no quoting (no value needs it), timestamps as
//! `2023-04-16 14:38:01.803442` (UTC, no zone), booleans `true`/`false`.

use std::fmt::Write as _;

use bytes::Bytes;
use rand::Rng;
use time::Date;
use vesper::{ErrorCode, ServiceError};
use vesper_storage::{ObjectKey, ObjectStore, PutOptions};

use crate::{
    DataSourceError,
    random::{Stream, seeded, weighted},
};

/// Where the users sample lives in the lake.
pub const USERS_CSV: &str = "data/users.csv";
/// Where the sessions sample lives in the lake.
pub const SESSIONS_CSV: &str = "data/sessions.csv";
/// Where the content sample lives in the lake.
pub const CONTENT_CSV: &str = "data/content.csv";
/// The content type the CSVs are written with.
pub const CSV_CONTENT_TYPE: &str = "text/csv";

/// Rows of `data/users.csv`.
pub const SAMPLE_USERS: u32 = 10_000;
/// Rows of `data/sessions.csv`.
pub const SAMPLE_SESSIONS: u32 = 100_000;
/// Rows of `data/content.csv`.
pub const SAMPLE_CONTENT: u32 = 1_000;

const STATUSES: [(&str, u32); 3] = [("free", 6), ("paid", 2), ("trial", 2)];
/// `IF` is deliberate: the old sample data has it for Italy.
const COUNTRIES: [(&str, u32); 4] = [("US", 5), ("BR", 3), ("IF", 1), ("FR", 1)];
const MEDIA_TYPES: [(&str, u32); 3] = [("video", 3), ("audio", 6), ("text", 1)];
const PRAYER_TYPES: [(&str, u32); 6] = [
    ("academic", 1),
    ("podcast", 1),
    ("reflection", 2),
    ("lectio_divina", 2),
    ("rosary", 3),
    ("meditation", 1),
];

/// One sample CSV, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleFile {
    /// Its key in the lake.
    pub key: &'static str,
    /// Data rows (the header not counted).
    pub rows: u32,
    /// The CSV text.
    pub csv: String,
}

/// The three sample CSVs of `seed`: users, sessions, content. The same
/// seed always renders the same bytes.
pub fn render_sample_data(seed: u64) -> [SampleFile; 3] {
    [
        render_users(seed),
        render_sessions(seed),
        render_content(seed),
    ]
}

/// Writes the sample CSVs of `seed` into `store` (a directory lake, S3, or
/// the Storage service), replacing any previous ones, and says what it
/// wrote: key, rows and bytes of each file.
pub async fn write_sample_data(
    store: &dyn ObjectStore,
    seed: u64,
) -> Result<Vec<WrittenFile>, DataSourceError> {
    // 100,000 rows take tens of milliseconds to render: off the runtime.
    let files = tokio::task::spawn_blocking(move || render_sample_data(seed))
        .await
        .map_err(|err| DataSourceError::Render(err.to_string()))?;
    let mut written = Vec::with_capacity(files.len());
    for file in files {
        let key = ObjectKey::new(file.key)?;
        let bytes = file.csv.len();
        store
            .put(
                &key,
                Bytes::from(file.csv),
                PutOptions::content_type(CSV_CONTENT_TYPE),
            )
            .await?;
        tracing::debug!(
            key = file.key,
            rows = file.rows,
            bytes,
            "sample file written"
        );
        written.push(WrittenFile {
            key: file.key,
            rows: file.rows,
            bytes,
        });
    }
    Ok(written)
}

/// What [`write_sample_data`] wrote of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Its key in the lake.
    pub key: &'static str,
    /// Data rows.
    pub rows: u32,
    /// Size in bytes.
    pub bytes: usize,
}

/// Whether all three sample CSVs are in `store` (so that "write if
/// missing" leaves a lake someone curated alone).
pub async fn sample_data_present(store: &dyn ObjectStore) -> Result<bool, DataSourceError> {
    for key in [USERS_CSV, SESSIONS_CSV, CONTENT_CSV] {
        match store.head(&ObjectKey::new(key)?).await {
            Ok(_) => {}
            // NotFound locally, or from a remote Storage service.
            Err(err) if err.code() == ErrorCode::NotFound => return Ok(false),
            Err(err) => return Err(err.into()),
        }
    }
    Ok(true)
}

fn render_users(seed: u64) -> SampleFile {
    let mut rng = seeded(seed, Stream::SampleUsers);
    let year = YearClock::new(2023);
    let mut csv = String::with_capacity(64 * SAMPLE_USERS as usize);
    csv.push_str("id,age,status,country,created_at\n");
    for id in 1..=SAMPLE_USERS {
        let age: u32 = rng.random_range(18..=98);
        let status = weighted(&mut rng, &STATUSES);
        let country = weighted(&mut rng, &COUNTRIES);
        let _ = write!(csv, "{id},{age},{status},{country},");
        year.write_random(&mut rng, &mut csv);
        csv.push('\n');
    }
    SampleFile {
        key: USERS_CSV,
        rows: SAMPLE_USERS,
        csv,
    }
}

fn render_sessions(seed: u64) -> SampleFile {
    let mut rng = seeded(seed, Stream::SampleSessions);
    let year = YearClock::new(2024);
    let mut csv = String::with_capacity(64 * SAMPLE_SESSIONS as usize);
    csv.push_str("id,user_id,content_id,is_complete,created_at\n");
    for id in 1..=SAMPLE_SESSIONS {
        let user_id = rng.random_range(1..=SAMPLE_USERS);
        let content_id = rng.random_range(1..=SAMPLE_CONTENT);
        let is_complete = rng.random_bool(0.5);
        let _ = write!(csv, "{id},{user_id},{content_id},{is_complete},");
        year.write_random(&mut rng, &mut csv);
        csv.push('\n');
    }
    SampleFile {
        key: SESSIONS_CSV,
        rows: SAMPLE_SESSIONS,
        csv,
    }
}

fn render_content(seed: u64) -> SampleFile {
    let mut rng = seeded(seed, Stream::SampleContent);
    let year = YearClock::new(2023);
    let mut csv = String::with_capacity(64 * SAMPLE_CONTENT as usize);
    csv.push_str("id,media_type,prayer_type,created_at\n");
    for id in 1..=SAMPLE_CONTENT {
        let media_type = weighted(&mut rng, &MEDIA_TYPES);
        let prayer_type = weighted(&mut rng, &PRAYER_TYPES);
        let _ = write!(csv, "{id},{media_type},{prayer_type},");
        year.write_random(&mut rng, &mut csv);
        csv.push('\n');
    }
    SampleFile {
        key: CONTENT_CSV,
        rows: SAMPLE_CONTENT,
        csv,
    }
}

const MICROS_PER_SECOND: u64 = 1_000_000;
const MICROS_PER_DAY: u64 = 86_400 * MICROS_PER_SECOND;

/// Random instants of one year, written as `YYYY-MM-DD HH:MM:SS.ffffff`.
/// The calendar is worked out once per year, not once per row.
struct YearClock {
    year: i32,
    /// (month, day of month) of each day of the year.
    days: Vec<(u8, u8)>,
}

impl YearClock {
    fn new(year: i32) -> Self {
        let days = (1..=time::util::days_in_year(year))
            .filter_map(|ordinal| Date::from_ordinal_date(year, ordinal).ok())
            .map(|date| (u8::from(date.month()), date.day()))
            .collect();
        Self { year, days }
    }

    fn write_random(&self, rng: &mut impl Rng, out: &mut String) {
        let micros_in_year = MICROS_PER_DAY * self.days.len() as u64;
        let instant = rng.random_range(0..micros_in_year);
        let day = usize::try_from(instant / MICROS_PER_DAY).unwrap_or(0);
        let (month, day_of_month) = self.days.get(day).copied().unwrap_or((1, 1));
        let of_day = instant % MICROS_PER_DAY;
        let seconds = of_day / MICROS_PER_SECOND;
        let _ = write!(
            out,
            "{:04}-{month:02}-{day_of_month:02} {:02}:{:02}:{:02}.{:06}",
            self.year,
            seconds / 3600,
            seconds / 60 % 60,
            seconds % 60,
            of_day % MICROS_PER_SECOND,
        );
    }
}
