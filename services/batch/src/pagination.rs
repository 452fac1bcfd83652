//! Paginators: how the next request follows from the last response, and
//! when paging is over.
//!
//! Every paginator guards against the classic endless loops: an empty page
//! always ends paging, an offset that does not move forward is an error,
//! and so is a cursor or link followed before in the same run (A -> B -> A
//! as much as A -> A). A count the API sends (a total, a page count) is
//! checked against the run's page limit before anything is planned from
//! it, so one response cannot make the run plan a billion pages.

use std::collections::HashMap;

use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{field::FieldPath, redact};

/// The longest cursor quoted in an error.
const MAX_TOKEN_CHARS: usize = 100;

/// How a pipeline pages through the API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pagination {
    /// One request.
    Single,
    /// `?offset=O&limit=L`.
    Offset(OffsetPaging),
    /// `?page=N[&page_size=S]`.
    PageNumber(PageNumberPaging),
    /// `?cursor=C`, with C taken from the previous response.
    Cursor(CursorPaging),
    /// The next page's URL taken from the previous response.
    NextLink(NextLinkPaging),
    /// The same request again, for feeds that answer fresh records on every
    /// call; needs a stop rule.
    Repeat(RepeatPaging),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OffsetPaging {
    pub(crate) limit: u64,
    pub(crate) offset_param: String,
    pub(crate) limit_param: String,
    pub(crate) start: u64,
    pub(crate) has_more: Option<FieldPath>,
    pub(crate) next_offset: Option<FieldPath>,
    pub(crate) total: Option<FieldPath>,
    pub(crate) stop_on_short_page: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PageNumberPaging {
    pub(crate) page_param: String,
    pub(crate) start: u64,
    pub(crate) page_size: Option<u64>,
    pub(crate) page_size_param: String,
    pub(crate) has_more: Option<FieldPath>,
    pub(crate) total_pages: Option<FieldPath>,
    pub(crate) stop_on_short_page: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CursorPaging {
    pub(crate) cursor: FieldPath,
    pub(crate) cursor_param: String,
    pub(crate) has_more: Option<FieldPath>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NextLinkPaging {
    pub(crate) next_url: FieldPath,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RepeatPaging {
    pub(crate) has_more: Option<FieldPath>,
}

impl Pagination {
    /// The first request's URL.
    pub(crate) fn first_url(&self, endpoint: &Url) -> Url {
        match self {
            Self::Offset(paging) => paging.url(endpoint, paging.start),
            Self::PageNumber(paging) => paging.url(endpoint, paging.start),
            Self::Single | Self::Cursor(_) | Self::NextLink(_) | Self::Repeat(_) => {
                endpoint.clone()
            }
        }
    }

    /// The query parameters the paginator sets, with the setting that names
    /// each.
    pub(crate) fn query_params(&self) -> Vec<(&str, &'static str)> {
        match self {
            Self::Offset(paging) => vec![
                (paging.offset_param.as_str(), "offset_param"),
                (paging.limit_param.as_str(), "limit_param"),
            ],
            Self::PageNumber(paging) => {
                let mut params = vec![(paging.page_param.as_str(), "page_param")];
                if paging.page_size.is_some() {
                    params.push((paging.page_size_param.as_str(), "page_size_param"));
                }
                params
            }
            Self::Cursor(paging) => vec![(paging.cursor_param.as_str(), "cursor_param")],
            Self::Single | Self::NextLink(_) | Self::Repeat(_) => Vec::new(),
        }
    }

    /// One line for listings: "offset (limit 200)".
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Single => "single page".into(),
            Self::Offset(paging) => format!("offset (limit {})", paging.limit),
            Self::PageNumber(paging) => match paging.page_size {
                Some(size) => format!("page number (from {}, size {size})", paging.start),
                None => format!("page number (from {})", paging.start),
            },
            Self::Cursor(paging) => {
                format!("cursor ({} -> ?{})", paging.cursor, paging.cursor_param)
            }
            Self::NextLink(paging) => format!("next link ({})", paging.next_url),
            Self::Repeat(paging) => match &paging.has_more {
                Some(has_more) => format!("repeat while {has_more}"),
                None => "repeat".into(),
            },
        }
    }
}

impl OffsetPaging {
    fn url(&self, endpoint: &Url, offset: u64) -> Url {
        let mut url = endpoint.clone();
        url.query_pairs_mut()
            .append_pair(&self.offset_param, &offset.to_string())
            .append_pair(&self.limit_param, &self.limit.to_string());
        url
    }
}

impl PageNumberPaging {
    fn url(&self, endpoint: &Url, page: u64) -> Url {
        let mut url = endpoint.clone();
        url.query_pairs_mut()
            .append_pair(&self.page_param, &page.to_string());
        if let Some(size) = self.page_size {
            url.query_pairs_mut()
                .append_pair(&self.page_size_param, &size.to_string());
        }
        url
    }
}

/// What comes after a page.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Fetch this URL next; its response decides what follows.
    Next(Url),
    /// These pages remain, and their number is known: they can be fetched
    /// concurrently and are written in this order. Each but the last must
    /// come back full (`full_page` records). `records` is the total to
    /// expect, when known; `done` says why paging ends after them.
    Remaining {
        plan: Box<Plan>,
        full_page: u64,
        records: Option<u64>,
        done: String,
    },
    /// Paging is over, for this reason.
    Done(String),
}

/// Pages known in advance: `pages` of them, their offsets or numbers
/// `first`, `first + step`, ... Their URLs are made as they are fetched,
/// not all at once.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pagination: Pagination,
    endpoint: Url,
    first: u64,
    step: u64,
    pages: u64,
}

impl Plan {
    /// How many pages.
    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }

    /// The URLs, in order.
    pub(crate) fn into_urls(self) -> impl Iterator<Item = Url> + Send {
        (0..self.pages).map(move |index| {
            let position = self.first.saturating_add(index.saturating_mul(self.step));
            match &self.pagination {
                Pagination::Offset(paging) => paging.url(&self.endpoint, position),
                Pagination::PageNumber(paging) => paging.url(&self.endpoint, position),
                Pagination::Single
                | Pagination::Cursor(_)
                | Pagination::NextLink(_)
                | Pagination::Repeat(_) => self.endpoint.clone(),
            }
        })
    }
}

/// What bounds the pages of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageBudget {
    /// The run's page limit (`limits.max_pages`): a run that would need
    /// more fails.
    pub(crate) limit: u64,
    /// `stop.max_pages`: the run ends there, and succeeds.
    pub(crate) stop_pages: Option<u64>,
    /// `stop.max_records`: the run ends there, and succeeds.
    pub(crate) stop_records: Option<u64>,
}

/// Walks one run through the pages of a pipeline.
#[derive(Debug)]
pub(crate) struct Pager<'a> {
    pagination: &'a Pagination,
    endpoint: &'a Url,
    budget: PageBudget,
    /// The current offset or page number.
    position: u64,
    /// Pages seen so far.
    pages: u64,
    /// Every cursor or link followed in this run (a digest of it), and the
    /// page it led to, to catch a loop however long. At most one entry a
    /// page, so the run's page limit bounds it.
    followed: HashMap<[u8; 16], u64>,
}

impl<'a> Pager<'a> {
    pub(crate) fn new(pagination: &'a Pagination, endpoint: &'a Url, budget: PageBudget) -> Self {
        let position = match pagination {
            Pagination::Offset(paging) => paging.start,
            Pagination::PageNumber(paging) => paging.start,
            _ => 0,
        };
        Self {
            pagination,
            endpoint,
            budget,
            position,
            pages: 0,
            followed: HashMap::new(),
        }
    }

    /// The pages to plan after the first, when `field` = `value` on the
    /// first page says `wanted` pages exist in all: as many as the stop
    /// rules take, and an error when that is over the run's page limit
    /// (checked before anything is planned).
    fn planned_pages(
        &self,
        field: &FieldPath,
        value: u64,
        wanted: u64,
        full_page: u64,
    ) -> Result<u64, String> {
        let mut fetched = wanted;
        if let Some(stop) = self.budget.stop_pages {
            fetched = fetched.min(stop);
        }
        if let Some(records) = self.budget.stop_records
            && full_page > 0
        {
            fetched = fetched.min(records.div_ceil(full_page).max(1));
        }
        if fetched > self.budget.limit {
            return Err(format!(
                "{field} {value} on page {} means {wanted} pages, over the run's page limit of {} (limits.max_pages); the run would not fetch everything, so it fails instead: raise limits.max_pages (--max-run-pages), or set stop.max_pages or stop.max_records to take only part",
                self.pages, self.budget.limit
            ));
        }
        Ok(fetched.saturating_sub(self.pages))
    }

    /// Records that `token` (from `field` on this page) leads to page
    /// `self.pages + 1`; an error if it was followed before in this run.
    fn follow(&mut self, field: &FieldPath, token: &str, shown: &str) -> Result<(), String> {
        let key = digest(token);
        if let Some(page) = self.followed.get(&key) {
            return Err(format!(
                "{field} {shown} on page {} was already followed, to page {page}; the API is going round in a loop",
                self.pages
            ));
        }
        self.followed.insert(key, self.pages + 1);
        Ok(())
    }

    /// The first request's URL.
    pub(crate) fn first_url(&self) -> Url {
        self.pagination.first_url(self.endpoint)
    }

    /// What follows the page fetched from `url`, whose body (records taken
    /// out) is `body` and which held `records` records. Only the first page
    /// can answer [`Step::Remaining`]. An error says what is wrong with the
    /// response.
    pub(crate) fn after(&mut self, url: &Url, body: &Value, records: u64) -> Result<Step, String> {
        self.pages += 1;
        if records == 0 && !matches!(self.pagination, Pagination::Single) {
            return Ok(Step::Done("empty page".into()));
        }
        match self.pagination {
            Pagination::Single => Ok(Step::Done("single page".into())),
            Pagination::Offset(paging) => self.after_offset(paging, body, records),
            Pagination::PageNumber(paging) => self.after_page_number(paging, body, records),
            Pagination::Cursor(paging) => self.after_cursor(paging, body),
            Pagination::NextLink(paging) => self.after_link(paging, url, body),
            Pagination::Repeat(paging) => match has_more(paging.has_more.as_ref(), body)? {
                Some(false) => Ok(Step::Done(format!(
                    "{} is false",
                    field_name(&paging.has_more)
                ))),
                _ => Ok(Step::Next(url.clone())),
            },
        }
    }

    fn after_offset(
        &mut self,
        paging: &OffsetPaging,
        body: &Value,
        records: u64,
    ) -> Result<Step, String> {
        let first = self.pages == 1;
        if has_more(paging.has_more.as_ref(), body)? == Some(false) {
            return Ok(Step::Done(format!(
                "{} is false",
                field_name(&paging.has_more)
            )));
        }
        let mut next = self.position.saturating_add(records);
        if let Some(path) = &paging.next_offset {
            let value = integer(path, body)?;
            if value < 0 {
                return Ok(Step::Done(format!("{path} is {value}")));
            }
            next = value.unsigned_abs();
            if next <= self.position {
                return Err(format!(
                    "{path} {next} does not move forward from offset {}; the API would send the same page forever",
                    self.position
                ));
            }
        }
        let total = match &paging.total {
            Some(path) => Some(count(path, body)?),
            None => None,
        };
        if let Some(total) = total
            && next >= total
        {
            return Ok(Step::Done(format!(
                "offset {next} reached {} {total}",
                field_name(&paging.total)
            )));
        }
        if paging.stop_on_short_page && records < paging.limit {
            return Ok(Step::Done(format!(
                "short page: {records} records for limit {}",
                paging.limit
            )));
        }
        if first
            && let Some(total) = total
            && let Some(path) = &paging.total
            && records == paging.limit
            && next == self.position.saturating_add(paging.limit)
        {
            // A full first page and a known total: every remaining page is
            // known, so hand them all out at once. (A short first page means
            // the server caps its page size below `limit`; offset arithmetic
            // would then skip records, so paging stays sequential.)
            let wanted = (total - next).div_ceil(paging.limit).saturating_add(1);
            let pages = self.planned_pages(path, total, wanted, paging.limit)?;
            return Ok(Step::Remaining {
                plan: Box::new(Plan {
                    pagination: self.pagination.clone(),
                    endpoint: self.endpoint.clone(),
                    first: next,
                    step: paging.limit,
                    pages,
                }),
                full_page: paging.limit,
                records: Some(total - paging.start),
                done: format!(
                    "offset {total} reached {} {total}",
                    field_name(&paging.total)
                ),
            });
        }
        self.position = next;
        Ok(Step::Next(paging.url(self.endpoint, next)))
    }

    fn after_page_number(
        &mut self,
        paging: &PageNumberPaging,
        body: &Value,
        records: u64,
    ) -> Result<Step, String> {
        let first = self.pages == 1;
        if has_more(paging.has_more.as_ref(), body)? == Some(false) {
            return Ok(Step::Done(format!(
                "{} is false",
                field_name(&paging.has_more)
            )));
        }
        if let Some(path) = &paging.total_pages {
            let total_pages = count(path, body)?;
            let last = paging.start.saturating_add(total_pages).saturating_sub(1);
            if total_pages == 0 || self.position >= last {
                return Ok(Step::Done(format!("last page ({path} {total_pages})")));
            }
            if first {
                let full_page = paging.page_size.unwrap_or(records);
                let wanted = last - self.position + 1;
                let pages = self.planned_pages(path, total_pages, wanted, full_page)?;
                return Ok(Step::Remaining {
                    plan: Box::new(Plan {
                        pagination: self.pagination.clone(),
                        endpoint: self.endpoint.clone(),
                        first: self.position + 1,
                        step: 1,
                        pages,
                    }),
                    full_page,
                    records: None,
                    done: format!("last page ({path} {total_pages})"),
                });
            }
        }
        if let Some(size) = paging.page_size
            && paging.stop_on_short_page
            && records < size
        {
            return Ok(Step::Done(format!(
                "short page: {records} records for page size {size}"
            )));
        }
        self.position = self.position.saturating_add(1);
        Ok(Step::Next(paging.url(self.endpoint, self.position)))
    }

    fn after_cursor(&mut self, paging: &CursorPaging, body: &Value) -> Result<Step, String> {
        if has_more(paging.has_more.as_ref(), body)? == Some(false) {
            return Ok(Step::Done(format!(
                "{} is false",
                field_name(&paging.has_more)
            )));
        }
        let Some(cursor) = token(&paging.cursor, body)? else {
            return Ok(Step::Done(format!("no {}", paging.cursor)));
        };
        let shown = format!("{:?}", redact::shorten(&cursor, MAX_TOKEN_CHARS));
        self.follow(&paging.cursor, &cursor, &shown)?;
        let mut next = self.endpoint.clone();
        next.query_pairs_mut()
            .append_pair(&paging.cursor_param, &cursor);
        Ok(Step::Next(next))
    }

    fn after_link(
        &mut self,
        paging: &NextLinkPaging,
        url: &Url,
        body: &Value,
    ) -> Result<Step, String> {
        let Some(link) = token(&paging.next_url, body)? else {
            return Ok(Step::Done(format!("no {}", paging.next_url)));
        };
        let mut next = url.join(&link).map_err(|err| {
            format!(
                "{} {:?} is not a URL: {err}",
                paging.next_url,
                redact::shorten(&redact::text(&link), MAX_TOKEN_CHARS)
            )
        })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(format!(
                "{} is a {}: URL; only http and https links are followed",
                paging.next_url,
                next.scheme()
            ));
        }
        if next.origin() != url.origin() {
            return Err(format!(
                "{} points to another server ({}); only links to {} are followed",
                paging.next_url,
                next.origin().ascii_serialization(),
                url.origin().ascii_serialization()
            ));
        }
        // Credentials come from the pipeline file, never from a response.
        let _ = next.set_username("");
        let _ = next.set_password(None);
        if self.pages == 1 {
            // The first page was not reached through a link; a link back
            // to it is a loop all the same.
            self.followed.insert(digest(url.as_str()), 1);
        }
        let shown = redact::shorten(&redact::url(&next), MAX_TOKEN_CHARS * 3);
        self.follow(&paging.next_url, next.as_str(), &shown)?;
        Ok(Step::Next(next))
    }
}

/// 128 bits of SHA-256: what the loop check keeps of a token, so that its
/// memory does not depend on how long the API's tokens are.
fn digest(token: &str) -> [u8; 16] {
    let digest = Sha256::digest(token.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn field_name(path: &Option<FieldPath>) -> String {
    path.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// The declared `has_more` flag: `None` when none is declared.
fn has_more(path: Option<&FieldPath>, body: &Value) -> Result<Option<bool>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    match path.get(body) {
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(other) => Err(format!("{path} is {}, not a boolean", kind(other))),
        None => Err(format!("the response has no {path} (pagination.has_more)")),
    }
}

/// A declared integer field (an offset, which can be -1).
fn integer(path: &FieldPath, body: &Value) -> Result<i64, String> {
    match path.get(body) {
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or_else(|| format!("{path} is {number}, not a whole number")),
        Some(Value::String(text)) => text
            .parse()
            .map_err(|_| format!("{path} is {text:?}, not a whole number")),
        Some(other) => Err(format!("{path} is {}, not a whole number", kind(other))),
        None => Err(format!("the response has no {path}")),
    }
}

/// A declared count (a total), never negative.
fn count(path: &FieldPath, body: &Value) -> Result<u64, String> {
    let value = integer(path, body)?;
    u64::try_from(value).map_err(|_| format!("{path} is {value}, not a count"))
}

/// A cursor or link: `None` when absent, null or empty (no more pages).
fn token(path: &FieldPath, body: &Value) -> Result<Option<String>, String> {
    match path.get(body) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) if text.is_empty() => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(other) => Err(format!("{path} is {}, not a string", kind(other))),
    }
}

/// "an object", "a string", ... for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn endpoint() -> Url {
        Url::parse("http://api.test/items").expect("url")
    }

    fn path(text: &str) -> Option<FieldPath> {
        Some(FieldPath::parse(text).expect("path"))
    }

    fn budget(limit: u64) -> PageBudget {
        PageBudget {
            limit,
            stop_pages: None,
            stop_records: None,
        }
    }

    fn offset(limit: u64) -> OffsetPaging {
        OffsetPaging {
            limit,
            offset_param: "offset".into(),
            limit_param: "limit".into(),
            start: 0,
            has_more: None,
            next_offset: None,
            total: None,
            stop_on_short_page: true,
        }
    }

    #[test]
    fn a_known_total_plans_every_remaining_page() {
        let pagination = Pagination::Offset(OffsetPaging {
            total: path("total"),
            ..offset(200)
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(100_000));
        let first = pager.first_url();
        assert_eq!(first.as_str(), "http://api.test/items?offset=0&limit=200");
        let step = pager
            .after(&first, &json!({"total": 1000}), 200)
            .expect("step");
        let Step::Remaining {
            plan,
            full_page,
            records,
            ..
        } = step
        else {
            panic!("expected a plan, got {step:?}");
        };
        assert_eq!(full_page, 200);
        assert_eq!(records, Some(1000));
        let offsets: Vec<_> = plan
            .into_urls()
            .map(|u| u.query().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            offsets,
            [
                "offset=200&limit=200",
                "offset=400&limit=200",
                "offset=600&limit=200",
                "offset=800&limit=200"
            ]
        );
    }

    #[test]
    fn next_offset_that_does_not_move_is_an_error() {
        let pagination = Pagination::Offset(OffsetPaging {
            next_offset: path("next"),
            ..offset(10)
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(100_000));
        let first = pager.first_url();
        let err = pager
            .after(&first, &json!({"next": 0}), 10)
            .expect_err("stuck");
        assert!(err.contains("does not move forward"), "{err}");
    }

    #[test]
    fn a_declared_flag_missing_from_the_response_is_an_error() {
        let pagination = Pagination::Offset(OffsetPaging {
            has_more: path("has_more"),
            ..offset(10)
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(100_000));
        let first = pager.first_url();
        let err = pager.after(&first, &json!({}), 10).expect_err("missing");
        assert!(err.contains("has no has_more"), "{err}");
        let err = pager
            .after(&first, &json!({"has_more": "yes"}), 10)
            .expect_err("string");
        assert!(err.contains("not a boolean"), "{err}");
    }

    #[test]
    fn links_to_other_servers_are_not_followed() {
        let pagination = Pagination::NextLink(NextLinkPaging {
            next_url: path("next").expect("path"),
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(100_000));
        let first = pager.first_url();
        let err = pager
            .after(
                &first,
                &json!({"next": "http://elsewhere.test/items?page=2"}),
                5,
            )
            .expect_err("cross-origin");
        assert!(err.contains("another server"), "{err}");
        let step = pager
            .after(&first, &json!({"next": "/items?page=2"}), 5)
            .expect("relative");
        assert_eq!(
            step,
            Step::Next(Url::parse("http://api.test/items?page=2").expect("url"))
        );
    }

    #[test]
    fn a_huge_total_is_checked_against_the_limit_before_anything_is_planned() {
        let pagination = Pagination::Offset(OffsetPaging {
            total: path("total"),
            ..offset(10)
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let first = pager.first_url();
        let err = pager
            .after(&first, &json!({"total": i64::MAX}), 10)
            .expect_err("over the limit");
        assert!(
            err.starts_with(&format!(
                "total {} on page 1 means 922337203685477581 pages, over the run's page limit of 1000 (limits.max_pages)",
                i64::MAX
            )),
            "{err}"
        );

        // A stop rule that takes only part is not over the limit: the plan
        // is cut to it, and made lazily.
        let mut pager = Pager::new(
            &pagination,
            &endpoint,
            PageBudget {
                stop_pages: Some(3),
                ..budget(1000)
            },
        );
        let Step::Remaining { plan, .. } = pager
            .after(&first, &json!({"total": i64::MAX}), 10)
            .expect("a plan")
        else {
            panic!("expected a plan");
        };
        assert_eq!(plan.pages(), 2);
        let mut pager = Pager::new(
            &pagination,
            &endpoint,
            PageBudget {
                stop_records: Some(25),
                ..budget(1000)
            },
        );
        let Step::Remaining { plan, .. } = pager
            .after(&first, &json!({"total": i64::MAX}), 10)
            .expect("a plan")
        else {
            panic!("expected a plan");
        };
        assert_eq!(plan.pages(), 2, "25 records are 3 pages of 10");
    }

    #[test]
    fn a_negative_or_fractional_count_is_refused() {
        let pagination = Pagination::PageNumber(PageNumberPaging {
            page_param: "page".into(),
            start: 1,
            page_size: None,
            page_size_param: "page_size".into(),
            has_more: None,
            total_pages: path("pages"),
            stop_on_short_page: false,
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let first = pager.first_url();
        let err = pager
            .after(&first, &json!({"pages": -5}), 10)
            .expect_err("negative");
        assert_eq!(err, "pages is -5, not a count");
        let err = pager
            .after(&first, &json!({"pages": 1e30}), 10)
            .expect_err("not whole");
        assert!(err.contains("not a whole number"), "{err}");
    }

    #[test]
    fn a_cursor_seen_earlier_in_the_run_is_a_loop() {
        let pagination = Pagination::Cursor(CursorPaging {
            cursor: path("next").expect("path"),
            cursor_param: "cursor".into(),
            has_more: None,
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let first = pager.first_url();
        for cursor in ["a", "b"] {
            assert!(matches!(
                pager.after(&first, &json!({"next": cursor}), 1),
                Ok(Step::Next(_))
            ));
        }
        let err = pager
            .after(&first, &json!({"next": "a"}), 1)
            .expect_err("A -> B -> A");
        assert_eq!(
            err,
            "next \"a\" on page 3 was already followed, to page 2; the API is going round in a loop"
        );
    }

    #[test]
    fn links_back_to_any_earlier_page_or_to_other_schemes_are_refused() {
        let pagination = Pagination::NextLink(NextLinkPaging {
            next_url: path("next").expect("path"),
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let first = pager.first_url();
        let second = Url::parse("http://api.test/items?page=2").expect("url");
        assert_eq!(
            pager.after(&first, &json!({"next": "/items?page=2"}), 1),
            Ok(Step::Next(second.clone()))
        );
        let err = pager
            .after(&second, &json!({"next": "/items"}), 1)
            .expect_err("back to the first page");
        assert!(
            err.contains("on page 2 was already followed, to page 1"),
            "{err}"
        );

        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let err = pager
            .after(&first, &json!({"next": "file:///etc/passwd"}), 1)
            .expect_err("file");
        assert_eq!(
            err,
            "next is a file: URL; only http and https links are followed"
        );
    }
}
