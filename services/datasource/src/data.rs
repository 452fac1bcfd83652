//! The mock upstream's data set: 10,000 users and 1,000 content items,
//! generated from a seed with the old data server's id formats, value sets
//! and ranges (docs/compatibility.md, "The data server's REST API").

use prost_types::Timestamp;
use rand::Rng;
use vesper::v1::{Content, ListUsersResponse, MediaType, PrayerType, User, UserStatus};

use crate::{
    DataSourceError,
    random::{Stream, pick, seeded},
};

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 42;
/// Users in the data set: "user_1" .. "user_10000".
pub const TOTAL_USERS: usize = 10_000;
/// Content items in the data set: "content_1" .. "content_1000".
pub const TOTAL_CONTENT: usize = 1_000;
/// The largest page of users, and the page size when none is asked for.
pub const MAX_PAGE: usize = 200;

const SECONDS_PER_DAY: i64 = 86_400;
/// 2023-01-01T00:00:00Z.
const START_OF_2023: i64 = 1_672_531_200;
/// 2024-01-01T00:00:00Z.
const START_OF_2024: i64 = 1_704_067_200;

const STATUSES: [UserStatus; 3] = [UserStatus::Free, UserStatus::Paid, UserStatus::Trial];
const COUNTRIES: [&str; 4] = ["US", "BR", "IT", "FR"];
const MEDIA_TYPES: [MediaType; 3] = [MediaType::Video, MediaType::Audio, MediaType::Text];
const PRAYER_TYPES: [PrayerType; 6] = [
    PrayerType::Academic,
    PrayerType::Podcast,
    PrayerType::Reflection,
    PrayerType::LectioDivina,
    PrayerType::Rosary,
    PrayerType::Meditation,
];

/// The users and content the mock upstream serves; the same seed always
/// gives the same data set.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSet {
    seed: u64,
    users: Vec<User>,
    content: Vec<Content>,
}

impl DataSet {
    /// The data set of `seed`.
    pub fn generate(seed: u64) -> Self {
        let mut rng = seeded(seed, Stream::ApiUsers);
        let users = (1..=TOTAL_USERS)
            .map(|n| User {
                user_id: format!("user_{n}"),
                age: rng.random_range(18..=82),
                status: *pick(&mut rng, &STATUSES) as i32,
                country: (*pick(&mut rng, &COUNTRIES)).to_owned(),
                created_at: Some(midnight(START_OF_2023, rng.random_range(0..365))),
            })
            .collect();
        let mut rng = seeded(seed, Stream::ApiContent);
        let content = (1..=TOTAL_CONTENT)
            .map(|n| Content {
                content_id: format!("content_{n}"),
                media_type: *pick(&mut rng, &MEDIA_TYPES) as i32,
                prayer_type: *pick(&mut rng, &PRAYER_TYPES) as i32,
                created_at: Some(midnight(START_OF_2024, rng.random_range(0..366))),
            })
            .collect();
        Self {
            seed,
            users,
            content,
        }
    }

    /// The seed this data set was generated from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Every user, in id order.
    pub fn users(&self) -> &[User] {
        &self.users
    }

    /// Every content item, in id order.
    pub fn content(&self) -> &[Content] {
        &self.content
    }

    /// One page of users, as `ListUsers` answers it: `offset` must name a
    /// user (0..9999), `limit` (default 200) must be at least 1 and is
    /// capped at 200.
    pub fn users_page(
        &self,
        offset: i32,
        limit: Option<i32>,
    ) -> Result<ListUsersResponse, DataSourceError> {
        let start = usize::try_from(offset)
            .ok()
            .filter(|start| *start < self.users.len())
            .ok_or(DataSourceError::InvalidOffset)?;
        let limit = match limit {
            None => MAX_PAGE,
            Some(limit) => usize::try_from(limit)
                .ok()
                .filter(|limit| *limit >= 1)
                .ok_or(DataSourceError::InvalidLimit)?
                .min(MAX_PAGE),
        };
        let end = (start + limit).min(self.users.len());
        let users = self.users[start..end].to_vec();
        let has_more = end < self.users.len();
        Ok(ListUsersResponse {
            count: count_of(users.len()),
            users,
            total_users: count_of(self.users.len()),
            offset,
            limit: int_of(limit),
            has_more,
            next_offset: if has_more { int_of(end) } else { -1 },
        })
    }
}

/// Midnight UTC of day `day` (0-based) after `year_start`.
fn midnight(year_start: i64, day: i64) -> Timestamp {
    Timestamp {
        seconds: year_start + day * SECONDS_PER_DAY,
        nanos: 0,
    }
}

/// Sizes here are bounded by the data set (10,000), far below `u32::MAX`.
pub(crate) fn count_of(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn int_of(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use vesper::wire::{content_json, user_json};

    use super::*;

    #[test]
    fn pages_follow_the_old_rules() {
        let data = DataSet::generate(DEFAULT_SEED);
        let first = data.users_page(0, None).expect("first page");
        assert_eq!(
            (first.count, first.limit, first.next_offset),
            (200, 200, 200)
        );
        assert!(first.has_more);
        let last = data.users_page(9990, Some(500)).expect("last page");
        assert_eq!((last.count, last.limit, last.next_offset), (10, 200, -1));
        assert!(!last.has_more);
        assert_eq!(last.users[9].user_id, "user_10000");
        let exact = data.users_page(9800, None).expect("exact end");
        assert_eq!(
            (exact.count, exact.has_more, exact.next_offset),
            (200, false, -1)
        );
        for offset in [-1, 10_000, i32::MAX, i32::MIN] {
            assert!(matches!(
                data.users_page(offset, None),
                Err(DataSourceError::InvalidOffset)
            ));
        }
        for limit in [0, -1, i32::MIN] {
            assert!(matches!(
                data.users_page(0, Some(limit)),
                Err(DataSourceError::InvalidLimit)
            ));
        }
    }

    #[test]
    fn values_are_in_the_upstream_sets_and_ranges() {
        let data = DataSet::generate(DEFAULT_SEED);
        assert_eq!(data.users().len(), TOTAL_USERS);
        assert_eq!(data.content().len(), TOTAL_CONTENT);
        for (index, user) in data.users().iter().enumerate() {
            assert_eq!(user.user_id, format!("user_{}", index + 1));
            assert!((18..=82).contains(&user.age), "{user:?}");
            let json = user_json(user);
            assert!(
                ["free", "paid", "trial"].contains(&json["status"].as_str().unwrap_or_default())
            );
            assert!(COUNTRIES.contains(&user.country.as_str()));
            let created = json["created_at"].as_str().unwrap_or_default();
            assert!(
                created.starts_with("2023-") && created.ends_with("T00:00:00Z"),
                "{created}"
            );
        }
        for (index, item) in data.content().iter().enumerate() {
            assert_eq!(item.content_id, format!("content_{}", index + 1));
            let json = content_json(item);
            assert!(!json["media_type"].as_str().unwrap_or_default().is_empty());
            assert!(!json["prayer_type"].as_str().unwrap_or_default().is_empty());
            let created = json["created_at"].as_str().unwrap_or_default();
            assert!(
                created.starts_with("2024-") && created.ends_with("T00:00:00Z"),
                "{created}"
            );
        }
        let ages: std::collections::BTreeSet<_> = data.users().iter().map(|u| u.age).collect();
        assert_eq!(ages.first(), Some(&18));
        assert_eq!(ages.last(), Some(&82));
    }
}
