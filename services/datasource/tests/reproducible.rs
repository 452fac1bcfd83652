//! A seed always gives the same data, and another seed other data: users,
//! content and the sample CSVs. The seed-42 fingerprints pin the streams,
//! so that a dependency upgrade that would change the default data fails
//! here instead of silently changing everyone's data.

use vesper::wire::{content_json, user_json};
use vesper_datasource::{DEFAULT_SEED, DataSet, render_sample_data};

#[test]
fn the_same_seed_gives_the_same_users_and_content() {
    let a = DataSet::generate(DEFAULT_SEED);
    let b = DataSet::generate(DEFAULT_SEED);
    assert_eq!(a, b);
    let other = DataSet::generate(DEFAULT_SEED + 1);
    assert_ne!(a.users(), other.users());
    assert_ne!(a.content(), other.content());
    // Ids are the same whatever the seed; only the values move.
    assert_eq!(a.users()[41].user_id, other.users()[41].user_id);
}

#[test]
fn the_same_seed_gives_the_same_csv_bytes() {
    let a = render_sample_data(DEFAULT_SEED);
    let b = render_sample_data(DEFAULT_SEED);
    assert_eq!(a, b);
    let other = render_sample_data(DEFAULT_SEED + 1);
    for (mine, theirs) in a.iter().zip(&other) {
        assert_eq!(mine.key, theirs.key);
        assert_ne!(mine.csv, theirs.csv, "{}", mine.key);
    }
}

#[test]
fn the_default_seed_gives_the_documented_data() {
    let data = DataSet::generate(DEFAULT_SEED);
    assert_eq!(
        user_json(&data.users()[0]).to_string(),
        FINGERPRINT_USER_1,
        "the seed-42 users changed"
    );
    assert_eq!(
        content_json(&data.content()[0]).to_string(),
        FINGERPRINT_CONTENT_1,
        "the seed-42 content changed"
    );
    let files = render_sample_data(DEFAULT_SEED);
    let second_lines: Vec<_> = files
        .iter()
        .map(|file| file.csv.lines().nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        second_lines, FINGERPRINT_CSV_ROW_1,
        "the seed-42 CSVs changed"
    );
}

const FINGERPRINT_USER_1: &str = r#"{"user_id":"user_1","age":54,"status":"trial","country":"IT","created_at":"2023-01-26T00:00:00Z"}"#;
const FINGERPRINT_CONTENT_1: &str = r#"{"content_id":"content_1","media_type":"video","prayer_type":"podcast","created_at":"2024-04-17T00:00:00Z"}"#;
const FINGERPRINT_CSV_ROW_1: [&str; 3] = [
    "1,61,free,BR,2023-07-27 21:59:06.037399",
    "1,393,912,false,2024-08-18 15:38:17.211664",
    "1,audio,reflection,2023-08-17 17:19:42.143804",
];
