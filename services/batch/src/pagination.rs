//! Paginators: how the next request follows from the last response, and
//! when paging is over.
//!
//! Every paginator guards against the classic endless loops: an empty page
//! always ends paging, an offset that does not move forward is an error,
//! and so is a cursor or link followed before in the same run (A -> B -> A
//! as much as A -> A). A count the API sends (a total, a page count) is
//! checked against the run's page limit before anything is planned from
//! it, so one response cannot make the run plan a billion pages.
//!
//! And none ends a run quietly while the API says there is more: a
//! "has more" flag (declared, or one of the well-known names the engine
//! sees in a response) that is true on the page where paging would end
//! fails the run, and so does a cursor or link field that is missing from
//! the first response (a wrong path, not the last page), and a short page
//! whose reason the engine cannot know.

use std::collections::HashMap;
use vesper::wire::json_kind;

use reqwest::{Url, header::HeaderMap};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Record, field::FieldPath, redact};

/// The longest cursor quoted in an error.
const MAX_TOKEN_CHARS: usize = 100;

/// Top-level response fields that say whether there is more, looked at
/// when a pipeline declares none: a `true` there on the page where paging
/// would end fails the run instead of passing a part off as the whole.
pub(crate) const SEEN_MORE_FIELDS: [&str; 6] = [
    "has_more",
    "hasMore",
    "has_next",
    "hasNext",
    "has_next_page",
    "hasNextPage",
];

/// How a pipeline pages through the API.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Pagination {
    /// One request.
    Single,
    /// `?offset=O&limit=L`.
    Offset(OffsetPaging),
    /// `?page=N[&page_size=S]`.
    PageNumber(PageNumberPaging),
    /// `?cursor=C`, with C taken from a field of the previous response.
    Cursor(CursorPaging),
    /// `?cursor=C`, with C taken from a header of the previous response.
    HeaderCursor(HeaderCursorPaging),
    /// `?starting_after=C`, with C a field of the previous page's last
    /// record (keyset paging).
    LastRecord(LastRecordPaging),
    /// The next page's URL taken from a field of the previous response.
    NextLink(NextLinkPaging),
    /// The next page's URL taken from the `Link` header (RFC 8288).
    LinkHeader(LinkHeaderPaging),
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
pub(crate) struct HeaderCursorPaging {
    /// The response header (lower case).
    pub(crate) cursor_header: String,
    pub(crate) cursor_param: String,
    pub(crate) has_more: Option<FieldPath>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LastRecordPaging {
    /// The field of the last record, as the API sent it.
    pub(crate) cursor_field: FieldPath,
    pub(crate) cursor_param: String,
    pub(crate) has_more: Option<FieldPath>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NextLinkPaging {
    pub(crate) next_url: FieldPath,
    pub(crate) has_more: Option<FieldPath>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinkHeaderPaging {
    /// The relation to follow (`next`).
    pub(crate) rel: String,
    pub(crate) has_more: Option<FieldPath>,
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
            _ => endpoint.clone(),
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
            Self::HeaderCursor(paging) => vec![(paging.cursor_param.as_str(), "cursor_param")],
            Self::LastRecord(paging) => vec![(paging.cursor_param.as_str(), "cursor_param")],
            Self::Single | Self::NextLink(_) | Self::LinkHeader(_) | Self::Repeat(_) => Vec::new(),
        }
    }

    /// The declared "has more" flag.
    fn has_more(&self) -> Option<&FieldPath> {
        match self {
            Self::Single => None,
            Self::Offset(paging) => paging.has_more.as_ref(),
            Self::PageNumber(paging) => paging.has_more.as_ref(),
            Self::Cursor(paging) => paging.has_more.as_ref(),
            Self::HeaderCursor(paging) => paging.has_more.as_ref(),
            Self::LastRecord(paging) => paging.has_more.as_ref(),
            Self::NextLink(paging) => paging.has_more.as_ref(),
            Self::LinkHeader(paging) => paging.has_more.as_ref(),
            Self::Repeat(paging) => paging.has_more.as_ref(),
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
            Self::HeaderCursor(paging) => format!(
                "header cursor ({} header -> ?{})",
                paging.cursor_header, paging.cursor_param
            ),
            Self::LastRecord(paging) => format!(
                "last record ({} -> ?{})",
                paging.cursor_field, paging.cursor_param
            ),
            Self::NextLink(paging) => format!("next link ({})", paging.next_url),
            Self::LinkHeader(paging) => format!("link header (rel=\"{}\")", paging.rel),
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
        self.url_sized(endpoint, page, self.page_size)
    }

    fn url_sized(&self, endpoint: &Url, page: u64, size: Option<u64>) -> Url {
        let mut url = endpoint.clone();
        url.query_pairs_mut()
            .append_pair(&self.page_param, &page.to_string());
        if let Some(size) = size {
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
                _ => self.endpoint.clone(),
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

/// One fetched page, as a paginator sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageView<'p> {
    /// Where it came from.
    pub(crate) url: &'p Url,
    /// The response headers.
    pub(crate) headers: &'p HeaderMap,
    /// The body, the record array taken out of it.
    pub(crate) body: &'p Value,
    /// The page's records, as the API sent them.
    pub(crate) records: &'p [Record],
}

/// Walks one run through the pages of a pipeline.
#[derive(Debug)]
pub(crate) struct Pager<'a> {
    pagination: &'a Pagination,
    endpoint: &'a Url,
    budget: PageBudget,
    /// Query parameters masked in messages besides the secret-looking ones.
    hidden: &'a [String],
    /// The current offset or page number.
    position: u64,
    /// Pages seen so far.
    pages: u64,
    /// Records seen so far.
    records: u64,
    /// The most records a page of this run held: the server's page size,
    /// as far as it is known.
    served: u64,
    /// A first page shorter than the declared page size, whose reason is
    /// known only from the page after it.
    short_first: Option<u64>,
    /// Whether the cursor or link field was in a response of this run
    /// (null included): missing from the first response, it is a wrong
    /// path, not the end.
    resolved: bool,
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
            hidden: &[],
            position,
            pages: 0,
            records: 0,
            served: 0,
            short_first: None,
            resolved: false,
            followed: HashMap::new(),
        }
    }

    /// Masks the values of `hidden` query parameters in messages.
    pub(crate) fn hiding(mut self, hidden: &'a [String]) -> Self {
        self.hidden = hidden;
        self
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
    fn follow(&mut self, field: &str, token: &str, shown: &str) -> Result<(), String> {
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

    /// Whether a stop rule ends the run at this page anyway.
    fn stop_rule_reached(&self) -> bool {
        self.budget.stop_pages.is_some_and(|max| self.pages >= max)
            || self
                .budget
                .stop_records
                .is_some_and(|max| self.records >= max)
    }

    /// What the response says about more pages: the declared flag (an
    /// error when it is missing or not a boolean), else a well-known flag
    /// the engine sees; with the name of the field.
    fn more(&self, body: &Value) -> Result<Option<(bool, String)>, String> {
        if let Some(path) = self.pagination.has_more() {
            return match path.get(body) {
                Some(Value::Bool(flag)) => Ok(Some((*flag, path.to_string()))),
                Some(other) => Err(format!(
                    "{path} (pagination.has_more) on page {} is {}, not a boolean",
                    self.pages,
                    json_kind(other)
                )),
                None => Err(format!(
                    "the response has no {path} (pagination.has_more) on page {}",
                    self.pages
                )),
            };
        }
        let Value::Object(object) = body else {
            return Ok(None);
        };
        Ok(SEEN_MORE_FIELDS
            .iter()
            .find_map(|name| match object.get(*name) {
                Some(Value::Bool(flag)) => Some((*flag, (*name).to_owned())),
                _ => None,
            }))
    }

    /// What follows `page`. Only the first page can answer
    /// [`Step::Remaining`]. An error says what is wrong with the response,
    /// or why ending here would keep only part of the data.
    pub(crate) fn after(&mut self, page: PageView<'_>) -> Result<Step, String> {
        self.pages += 1;
        let records = u64::try_from(page.records.len()).unwrap_or(u64::MAX);
        self.records = self.records.saturating_add(records);
        let more = self.more(page.body)?;
        let declared = self.pagination.has_more().is_some();
        if declared && let Some((false, field)) = &more {
            return Ok(Step::Done(format!("{field} is false")));
        }
        let says_more = matches!(more, Some((true, _)));
        let step = if records == 0 && !matches!(self.pagination, Pagination::Single) {
            Step::Done("empty page".into())
        } else {
            match self.pagination {
                Pagination::Single => Step::Done("single page".into()),
                Pagination::Offset(paging) => {
                    self.after_offset(paging, page.body, records, says_more)?
                }
                Pagination::PageNumber(paging) => {
                    self.after_page_number(paging, page.body, records, says_more, &more)?
                }
                Pagination::Cursor(paging) => {
                    let cursor = self.body_token(&paging.cursor, "cursor", page.body)?;
                    self.after_cursor(&paging.cursor.to_string(), &paging.cursor_param, cursor)?
                }
                Pagination::HeaderCursor(paging) => {
                    let cursor = header_token(page.headers, &paging.cursor_header)?;
                    let field = format!("{} header", paging.cursor_header);
                    self.after_cursor(&field, &paging.cursor_param, cursor)?
                }
                Pagination::LastRecord(paging) => {
                    let cursor = self.last_record_token(paging, page.records)?;
                    let field = format!("{} of the last record", paging.cursor_field);
                    self.after_cursor(&field, &paging.cursor_param, Some(cursor))?
                }
                Pagination::NextLink(paging) => {
                    let link = self.body_token(&paging.next_url, "next_url", page.body)?;
                    self.after_link(&paging.next_url.to_string(), page.url, link)?
                }
                Pagination::LinkHeader(paging) => {
                    let link = link_header(page.headers, &paging.rel);
                    let field = format!("Link rel=\"{}\"", paging.rel);
                    self.after_link(&field, page.url, link)?
                }
                Pagination::Repeat(_) => Step::Next(page.url.clone()),
            }
        };
        self.served = self.served.max(records);
        if let Step::Done(reason) = &step
            && let Some((true, field)) = &more
            && !matches!(self.pagination, Pagination::Repeat(_))
            && !self.stop_rule_reached()
        {
            let hint = match self.pagination {
                Pagination::Single => {
                    "; declare a paginator for this API, or set stop.max_pages = 1 to take the first page only"
                }
                _ => "; check the pagination settings against a response of the API",
            };
            return Err(format!(
                "{field} is true on page {}, but paging would end here ({reason}): the run would keep only part of the data, so it fails instead{hint}",
                self.pages
            ));
        }
        Ok(step)
    }

    fn after_offset(
        &mut self,
        paging: &OffsetPaging,
        body: &Value,
        records: u64,
        says_more: bool,
    ) -> Result<Step, String> {
        let first = self.pages == 1;
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
        // A short page ends paging only against the page size the server
        // has shown it serves: a first page shorter than `limit` may be
        // the whole data or the server's own cap, so the next page tells
        // (offsets count records received, so none is skipped either way).
        if paging.stop_on_short_page
            && total.is_none()
            && !says_more
            && !first
            && records < paging.limit.min(self.served)
        {
            return Ok(Step::Done(format!(
                "short page: {records} records for limit {}",
                paging.limit.min(self.served)
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
        says_more: bool,
        more: &Option<(bool, String)>,
    ) -> Result<Step, String> {
        let first = self.pages == 1;
        if let Some(size) = paging.page_size {
            // Pages are numbered by a size: a server that serves fewer than
            // `page_size` may number them by its own size or by the one
            // asked for, and only one of the two pages through every record.
            let capped = |served: u64, evidence: String| {
                format!(
                    "page {} had {served} records for page_size {size}, and {evidence}: the server serves fewer records per page than page_size asks for, so numbered pages could skip or repeat records; set page_size to {served} or less",
                    paging.start
                )
            };
            if let Some(served) = self.short_first.take() {
                return Err(capped(
                    served,
                    format!(
                        "page {} asked for at {served} a page has {records} more",
                        self.position
                    ),
                ));
            }
            if records < size && says_more {
                let field = more
                    .as_ref()
                    .map(|(_, field)| field.as_str())
                    .unwrap_or_default();
                if first {
                    return Err(capped(records, format!("{field} is true")));
                }
            }
        }
        if let Some(path) = &paging.total_pages {
            let total_pages = count(path, body)?;
            let last = paging.start.saturating_add(total_pages).saturating_sub(1);
            if total_pages == 0 || self.position >= last {
                return Ok(Step::Done(format!("last page ({path} {total_pages})")));
            }
            if first {
                if let Some(size) = paging.page_size
                    && records < size
                {
                    return Err(format!(
                        "page {} had {records} records for page_size {size}, and {path} is {total_pages}: the server serves fewer records per page than page_size asks for, so numbered pages could skip or repeat records; set page_size to {records} or less",
                        paging.start
                    ));
                }
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
            && !says_more
            && records < size
        {
            if first {
                // The whole data, or a server that serves fewer than asked
                // (numbering its pages by either size): the next page at
                // the size served tells, empty for the former.
                self.short_first = Some(records);
                self.position = self.position.saturating_add(1);
                return Ok(Step::Next(paging.url_sized(
                    self.endpoint,
                    self.position,
                    Some(records),
                )));
            } else {
                return Ok(Step::Done(format!(
                    "short page: {records} records for page size {size}"
                )));
            }
        }
        self.position = self.position.saturating_add(1);
        Ok(Step::Next(paging.url(self.endpoint, self.position)))
    }

    /// A cursor or link from a field of the body: `None` for null or `""`
    /// (no more pages) and for a field that was in an earlier response of
    /// this run (an API that leaves it out on the last page); missing from
    /// the first response it is an error that names the field.
    fn body_token(
        &mut self,
        path: &FieldPath,
        setting: &str,
        body: &Value,
    ) -> Result<Option<String>, String> {
        match path.get(body) {
            None if self.resolved => Ok(None),
            None => Err(format!(
                "the response has no {path} (pagination.{setting}) on page {}, and had none on an earlier page: the field path is wrong, or the API leaves it out; the run would end without knowing whether there is more, so it fails instead",
                self.pages
            )),
            Some(value) => {
                self.resolved = true;
                token(path, value)
            }
        }
    }

    /// The cursor in the last record: a string or a number, never missing.
    fn last_record_token(
        &self,
        paging: &LastRecordPaging,
        records: &[Record],
    ) -> Result<String, String> {
        let field = &paging.cursor_field;
        let index = records.len().saturating_sub(1);
        let problem = |what: String| {
            format!(
                "the last record on page {} (record {index}) {what} (pagination.cursor_field); the next page cannot be asked for, and ending here would keep only part of the data",
                self.pages
            )
        };
        let record = records.last().ok_or_else(|| problem("is missing".into()))?;
        match field.get_in(record) {
            None => Err(problem(format!("has no {field}"))),
            Some(Value::String(text)) if !text.is_empty() => Ok(text.clone()),
            Some(Value::Number(number)) => Ok(number.to_string()),
            Some(Value::String(_)) => Err(problem(format!("has an empty {field}"))),
            Some(other) => Err(problem(format!(
                "has {field} {}, not a string or a number",
                json_kind(other)
            ))),
        }
    }

    fn after_cursor(
        &mut self,
        field: &str,
        param: &str,
        cursor: Option<String>,
    ) -> Result<Step, String> {
        let Some(cursor) = cursor else {
            return Ok(Step::Done(format!("no {field}")));
        };
        let shown = format!("{:?}", redact::shorten(&cursor, MAX_TOKEN_CHARS));
        self.follow(field, &cursor, &shown)?;
        let mut next = self.endpoint.clone();
        next.query_pairs_mut().append_pair(param, &cursor);
        Ok(Step::Next(next))
    }

    fn after_link(&mut self, field: &str, url: &Url, link: Option<String>) -> Result<Step, String> {
        let Some(link) = link else {
            return Ok(Step::Done(format!("no {field}")));
        };
        let mut next = url.join(&link).map_err(|err| {
            format!(
                "{field} {:?} is not a URL: {err}",
                redact::shorten(&redact::text(&link), MAX_TOKEN_CHARS)
            )
        })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(format!(
                "{field} is a {}: URL; only http and https links are followed",
                next.scheme()
            ));
        }
        if next.origin() != url.origin() {
            return Err(format!(
                "{field} points to another server ({}); only links to {} are followed",
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
        let shown = redact::shorten(&redact::url_hiding(&next, self.hidden), MAX_TOKEN_CHARS * 3);
        self.follow(field, next.as_str(), &shown)?;
        Ok(Step::Next(next))
    }
}

/// A cursor from a response header: `None` when absent or empty (the
/// header is how the API says there is no next page).
fn header_token(headers: &HeaderMap, name: &str) -> Result<Option<String>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| format!("the {name} header is not visible ASCII"))?
        .trim();
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

/// The target of the first `Link` entry (RFC 8288) whose `rel` has `rel`
/// among its space-separated relations, e.g. GitHub's
/// `<https://api.github.com/...&page=2>; rel="next", <...>; rel="last"`.
pub(crate) fn link_header(headers: &HeaderMap, rel: &str) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(link_entries)
        .find(|(_, rels)| {
            rels.split_ascii_whitespace()
                .any(|one| one.eq_ignore_ascii_case(rel))
        })
        .map(|(target, _)| target)
}

/// The `(target, rel)` pairs of one `Link` header value. A target is
/// between `<` and `>` (and may hold commas); parameters follow, split on
/// `;`, values quoted or not.
fn link_entries(value: &str) -> Vec<(String, String)> {
    let mut entries = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else {
            break;
        };
        let target = rest[open + 1..open + close].trim().to_owned();
        let after = &rest[open + close + 1..];
        // The parameters run to the next entry's '<' (outside quotes).
        let mut end = after.len();
        let mut quoted = false;
        for (index, c) in after.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '<' if !quoted => {
                    end = index;
                    break;
                }
                _ => {}
            }
        }
        let params = &after[..end];
        let rel = params
            .split(';')
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("rel"))
            .map(|(_, value)| {
                value
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .to_owned()
            })
            .unwrap_or_default();
        entries.push((target, rel));
        rest = &after[end..];
    }
    entries
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

/// A declared integer field (an offset, which can be -1).
fn integer(path: &FieldPath, body: &Value) -> Result<i64, String> {
    match path.get(body) {
        Some(Value::Number(number)) => number
            .as_i64()
            .ok_or_else(|| format!("{path} is {number}, not a whole number")),
        Some(Value::String(text)) => text
            .parse()
            .map_err(|_| format!("{path} is {text:?}, not a whole number")),
        Some(other) => Err(format!(
            "{path} is {}, not a whole number",
            json_kind(other)
        )),
        None => Err(format!("the response has no {path}")),
    }
}

/// A declared count (a total), never negative.
fn count(path: &FieldPath, body: &Value) -> Result<u64, String> {
    let value = integer(path, body)?;
    u64::try_from(value).map_err(|_| format!("{path} is {value}, not a count"))
}

/// A cursor or link found at `path`: `None` when null or empty (no more
/// pages).
fn token(path: &FieldPath, value: &Value) -> Result<Option<String>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) if text.is_empty() => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        Value::Number(number) => Ok(Some(number.to_string())),
        other => Err(format!("{path} is {}, not a string", json_kind(other))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    impl Pager<'_> {
        /// `after` for a page of `records` empty records and no headers.
        fn after_n(&mut self, url: &Url, body: &Value, records: usize) -> Result<Step, String> {
            let records = vec![Record::new(); records];
            self.after(PageView {
                url,
                headers: &HeaderMap::new(),
                body,
                records: &records,
            })
        }
    }

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
            .after_n(&first, &json!({"total": 1000}), 200)
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
    fn link_headers_are_read_as_rfc_8288_says() {
        let mut headers = HeaderMap::new();
        headers.append(
            reqwest::header::LINK,
            "<https://api.test/items?page=1&q=a,b>; rel=\"prev first\", <https://api.test/items?page=3&q=a,b>; title=\"x; y\"; rel=\"NEXT\""
                .parse()
                .expect("a header"),
        );
        headers.append(
            reqwest::header::LINK,
            "<https://api.test/items?page=9>; rel=last"
                .parse()
                .expect("a header"),
        );
        assert_eq!(
            link_header(&headers, "next").as_deref(),
            Some("https://api.test/items?page=3&q=a,b")
        );
        assert_eq!(
            link_header(&headers, "first").as_deref(),
            Some("https://api.test/items?page=1&q=a,b")
        );
        assert_eq!(
            link_header(&headers, "last").as_deref(),
            Some("https://api.test/items?page=9")
        );
        assert_eq!(link_header(&headers, "self"), None);
        assert_eq!(link_header(&HeaderMap::new(), "next"), None);
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
            .after_n(&first, &json!({"next": 0}), 10)
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
        let err = pager.after_n(&first, &json!({}), 10).expect_err("missing");
        assert!(err.contains("has no has_more"), "{err}");
        let err = pager
            .after_n(&first, &json!({"has_more": "yes"}), 10)
            .expect_err("string");
        assert!(err.contains("not a boolean"), "{err}");
    }

    #[test]
    fn links_to_other_servers_are_not_followed() {
        let pagination = Pagination::NextLink(NextLinkPaging {
            next_url: path("next").expect("path"),
            has_more: None,
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(100_000));
        let first = pager.first_url();
        let err = pager
            .after_n(
                &first,
                &json!({"next": "http://elsewhere.test/items?page=2"}),
                5,
            )
            .expect_err("cross-origin");
        assert!(err.contains("another server"), "{err}");
        let step = pager
            .after_n(&first, &json!({"next": "/items?page=2"}), 5)
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
            .after_n(&first, &json!({"total": i64::MAX}), 10)
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
            .after_n(&first, &json!({"total": i64::MAX}), 10)
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
            .after_n(&first, &json!({"total": i64::MAX}), 10)
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
            .after_n(&first, &json!({"pages": -5}), 10)
            .expect_err("negative");
        assert_eq!(err, "pages is -5, not a count");
        let err = pager
            .after_n(&first, &json!({"pages": 1e30}), 10)
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
                pager.after_n(&first, &json!({"next": cursor}), 1),
                Ok(Step::Next(_))
            ));
        }
        let err = pager
            .after_n(&first, &json!({"next": "a"}), 1)
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
            has_more: None,
        });
        let endpoint = endpoint();
        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let first = pager.first_url();
        let second = Url::parse("http://api.test/items?page=2").expect("url");
        assert_eq!(
            pager.after_n(&first, &json!({"next": "/items?page=2"}), 1),
            Ok(Step::Next(second.clone()))
        );
        let err = pager
            .after_n(&second, &json!({"next": "/items"}), 1)
            .expect_err("back to the first page");
        assert!(
            err.contains("on page 2 was already followed, to page 1"),
            "{err}"
        );

        let mut pager = Pager::new(&pagination, &endpoint, budget(1000));
        let err = pager
            .after_n(&first, &json!({"next": "file:///etc/passwd"}), 1)
            .expect_err("file");
        assert_eq!(
            err,
            "next is a file: URL; only http and https links are followed"
        );
    }
}
