//! Validation of a parsed pipeline file into [`Pipelines`]: defaults
//! applied, every value checked against its bounds, URLs, headers and
//! secret references resolved, paging turned into the strategy a run
//! drives. Every error names the setting as a dotted path.

use std::{
    collections::{BTreeMap, HashSet},
    io::Read,
    time::Duration,
};

use reqwest::{
    Url,
    header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue},
};
use vesper_storage::{DEFAULT_MAX_OBJECT_SIZE, ObjectKey};

use super::{
    DEFAULT_BASE_URL, DEFAULT_PARTS, DEFAULT_RETRY, DEFAULT_TIMEOUT, LimitOverrides, MAX_ATTEMPTS,
    MAX_RATE_LIMIT, MAX_REDIRECTS_CEILING, MAX_SECRET_FILE_BYTES, MAX_WAIT, PartLimits, Pipeline,
    Pipelines, RetryPolicy, RunLimits, StopRule, WEBHOOK_EVENTS_PREFIX,
    format::{
        FileToml, LimitsToml, PaginationToml, PartsToml, PipelineToml, Query, RetryToml, StopToml,
        TransformToml,
    },
};
use crate::{
    BatchError,
    field::FieldPath,
    pagination::{
        CursorPaging, HeaderCursorPaging, LastRecordPaging, LinkHeaderPaging, NextLinkPaging,
        OffsetPaging, PageNumberPaging, Pagination, RepeatPaging,
    },
    redact::{self, Credentials},
    transform::{METADATA_FIELDS, Transform},
};

pub(super) struct Resolver<'a> {
    pub(super) origin: &'a str,
}

impl Resolver<'_> {
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> BatchError {
        BatchError::Invalid {
            origin: self.origin.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn resolve(&self, file: FileToml) -> Result<Pipelines, BatchError> {
        let base = parse_base_url(file.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL))
            .map_err(|reason| self.invalid("base_url", reason))?;
        if file.pipelines.is_empty() {
            return Err(self.invalid("pipelines", "declare at least one pipeline"));
        }
        let defaults = &file.defaults;
        let default_timeout = match defaults.timeout {
            Some(timeout) => self.timeout(timeout.0, "defaults.timeout")?,
            None => DEFAULT_TIMEOUT,
        };
        let default_retry = self.retry(&defaults.retry, DEFAULT_RETRY, "defaults.retry")?;
        let default_parts = self.parts(&defaults.parts, DEFAULT_PARTS, "defaults.parts")?;
        let default_headers = self.headers(&defaults.headers, "defaults.headers")?;
        let default_limits = self.limits(&defaults.limits, "defaults.limits")?;
        let default_rate = defaults
            .rate_limit
            .map(|rate| self.rate_limit(rate, "defaults.rate_limit"))
            .transpose()?;

        let mut pipelines: Vec<Pipeline> = Vec::with_capacity(file.pipelines.len());
        for (name, declared) in file.pipelines {
            let pipeline = self.pipeline(
                name,
                declared,
                &base,
                default_timeout,
                default_retry,
                default_parts,
                &default_headers,
                default_limits,
                default_rate,
            )?;
            if let Some(other) = pipelines.iter().find(|other| {
                other.prefix.starts_with(&pipeline.prefix)
                    || pipeline.prefix.starts_with(&other.prefix)
            }) {
                return Err(self.invalid(
                    format!("pipelines.{}.prefix", pipeline.name),
                    format!(
                        "{:?} overlaps pipeline {:?}'s prefix {:?}; each pipeline needs a prefix of its own",
                        pipeline.prefix, other.name, other.prefix
                    ),
                ));
            }
            pipelines.push(pipeline);
        }
        Ok(Pipelines {
            origin: self.origin.to_owned(),
            pipelines,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn pipeline(
        &self,
        name: String,
        declared: PipelineToml,
        file_base: &(Url, Option<Credentials>),
        default_timeout: Duration,
        default_retry: RetryPolicy,
        default_parts: PartLimits,
        default_headers: &HeaderMap,
        default_limits: LimitOverrides,
        default_rate: Option<f64>,
    ) -> Result<Pipeline, BatchError> {
        let at = |key: &str| format!("pipelines.{name}.{key}");
        check_name(&name).map_err(|reason| self.invalid(format!("pipelines.{name}"), reason))?;

        let own_base_url = declared.base_url.is_some();
        let (base, credentials) = match &declared.base_url {
            Some(text) => {
                parse_base_url(text).map_err(|reason| self.invalid(at("base_url"), reason))?
            }
            None => file_base.clone(),
        };
        let records = declared
            .records
            .as_deref()
            .map(FieldPath::parse)
            .transpose()
            .map_err(|reason| self.invalid(at("records"), reason))?;
        let pagination =
            self.pagination(declared.pagination, records.as_ref(), &at("pagination"))?;
        let (query, secret_params) = self.query(&declared.query, &pagination, &at("query"))?;
        let endpoint = self.endpoint(&base, &declared.path, &query, &at("path"))?;
        let rate_limit = match declared.rate_limit {
            Some(rate) => Some(self.rate_limit(rate, &at("rate_limit"))?),
            None => default_rate,
        };
        let prefix = self.prefix(
            declared.prefix.unwrap_or_else(|| format!("{name}/")),
            &at("prefix"),
        )?;
        let timeout = match declared.timeout {
            Some(timeout) => self.timeout(timeout.0, &at("timeout"))?,
            None => default_timeout,
        };
        let retry = self.retry(&declared.retry, default_retry, &at("retry"))?;
        let parts = self.parts(&declared.parts, default_parts, &at("parts"))?;
        let mut headers = default_headers.clone();
        headers.extend(self.headers(&declared.headers, &at("headers"))?);
        let limits = default_limits.then(self.limits(&declared.limits, &at("limits"))?);

        let stop = self.stop(&declared.stop, &at("stop"))?;
        if matches!(pagination, Pagination::Repeat(_)) && !stop.is_set() {
            return Err(self.invalid(
                at("stop"),
                "a repeat paginator only ends when the API says so; set stop.max_pages or stop.max_records so that a run always ends",
            ));
        }
        let transform = self.transform(declared.transform, &at("transform"))?;

        let pipeline = Pipeline {
            name,
            endpoint,
            path: declared.path,
            query,
            own_base_url,
            records,
            prefix,
            timeout,
            retry,
            headers,
            credentials,
            secret_params: secret_params.into(),
            rate_limit,
            limits,
            pagination,
            stop,
            transform,
            parts,
        };
        let base_url_field = if own_base_url {
            format!("pipelines.{}.base_url", pipeline.name)
        } else {
            "base_url".to_owned()
        };
        self.check_one_authorization(&pipeline, &base_url_field)?;
        Ok(pipeline)
    }

    /// Credentials in the base URL and an `Authorization` header would be
    /// two answers to one question; refuse rather than pick one.
    pub(super) fn check_one_authorization(
        &self,
        pipeline: &Pipeline,
        url_field: &str,
    ) -> Result<(), BatchError> {
        if pipeline.credentials.is_some() && pipeline.headers.contains_key(AUTHORIZATION) {
            return Err(self.invalid(
                format!("pipelines.{}.headers.Authorization", pipeline.name),
                format!(
                    "{url_field} carries credentials (user:password@) too; keep one of the two"
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn endpoint(
        &self,
        base: &Url,
        path: &str,
        query: &[(String, String)],
        field: &str,
    ) -> Result<Url, BatchError> {
        if path.contains(['?', '#']) {
            return Err(self.invalid(
                field,
                format!("{path:?} has a query or fragment; put query parameters under `query`"),
            ));
        }
        if path.contains("://") {
            return Err(self.invalid(
                field,
                format!("{path:?} is a full URL; set base_url to it and leave path empty"),
            ));
        }
        let mut endpoint = base
            .join(path.trim_start_matches('/'))
            .map_err(|err| self.invalid(field, format!("cannot join {path:?} to {base}: {err}")))?;
        if !query.is_empty() {
            endpoint.query_pairs_mut().extend_pairs(query);
        }
        Ok(endpoint)
    }

    fn query(
        &self,
        declared: &BTreeMap<String, toml::Value>,
        pagination: &Pagination,
        field: &str,
    ) -> Result<(Query, Vec<String>), BatchError> {
        let paging_params = pagination.query_params();
        let mut secret_params = Vec::new();
        let query = declared
            .iter()
            .map(|(name, value)| {
                let at = format!("{field}.{name}");
                if let Some(setting) = paging_params
                    .iter()
                    .find_map(|(param, setting)| (param == name).then_some(setting))
                {
                    return Err(self.invalid(
                        at,
                        format!("the paginator sets {name:?} itself (pagination.{setting}); remove it from the query"),
                    ));
                }
                let text = match value {
                    toml::Value::String(text) => {
                        let (text, secret) = self.expand(text, &at)?;
                        if secret {
                            secret_params.push(name.clone());
                        }
                        text
                    }
                    toml::Value::Integer(number) => number.to_string(),
                    toml::Value::Float(number) => number.to_string(),
                    toml::Value::Boolean(flag) => flag.to_string(),
                    _ => {
                        return Err(self.invalid(at, "a query value is a string, a number or a boolean"));
                    }
                };
                Ok((name.clone(), text))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((query, secret_params))
    }

    /// `text` with its `${env:NAME}` and `${file:PATH}` references replaced
    /// by the variable's value or the file's content (trailing newlines
    /// dropped); `$${` is a literal `${`. Says whether anything was
    /// replaced: the value is then a secret. Errors name the setting and
    /// the reference, never a value.
    fn expand(&self, text: &str, field: &str) -> Result<(String, bool), BatchError> {
        let mut out = String::with_capacity(text.len());
        let mut secret = false;
        let mut rest = text;
        while let Some(start) = rest.find('$') {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            if let Some(escaped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = escaped;
                continue;
            }
            let Some(reference) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                continue;
            };
            let Some(end) = reference.find('}') else {
                return Err(self.invalid(
                    field,
                    "a \"${\" is not closed by \"}\"; write ${env:NAME} or ${file:PATH}, or $${ for a literal ${",
                ));
            };
            let inner = &reference[..end];
            let value = if let Some(name) = inner.strip_prefix("env:") {
                if name.is_empty() {
                    return Err(self.invalid(field, "${env:} names no variable"));
                }
                std::env::var(name).map_err(|err| {
                    self.invalid(
                        field,
                        match err {
                            std::env::VarError::NotPresent => {
                                format!("${{env:{name}}}: the environment variable {name} is not set")
                            }
                            std::env::VarError::NotUnicode(_) => {
                                format!("${{env:{name}}}: the environment variable {name} is not valid UTF-8")
                            }
                        },
                    )
                })?
            } else if let Some(path) = inner.strip_prefix("file:") {
                self.read_secret_file(path, field)?
            } else {
                return Err(self.invalid(
                    field,
                    format!(
                        "${{{}}} is not a reference this file format knows; write ${{env:{0}}} for an environment variable or ${{file:PATH}} for a file (and $${{ for a literal ${{)",
                        redact::shorten(inner, 64)
                    ),
                ));
            };
            out.push_str(&value);
            secret = true;
            rest = &reference[end + 1..];
        }
        out.push_str(rest);
        Ok((out, secret))
    }

    /// A secret file's content, at most [`MAX_SECRET_FILE_BYTES`], trailing
    /// newlines dropped.
    fn read_secret_file(&self, path: &str, field: &str) -> Result<String, BatchError> {
        let shown = format!("${{file:{path}}}");
        if path.is_empty() {
            return Err(self.invalid(field, "${file:} names no file"));
        }
        let file = std::fs::File::open(path)
            .map_err(|err| self.invalid(field, format!("{shown}: cannot open the file: {err}")))?;
        let mut bytes = Vec::new();
        file.take(MAX_SECRET_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| self.invalid(field, format!("{shown}: cannot read the file: {err}")))?;
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_SECRET_FILE_BYTES {
            return Err(self.invalid(
                field,
                format!(
                    "{shown}: the file is over {} KiB; a secret file holds one value",
                    MAX_SECRET_FILE_BYTES / 1024
                ),
            ));
        }
        let text = String::from_utf8(bytes)
            .map_err(|_| self.invalid(field, format!("{shown}: the file is not UTF-8 text")))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }

    fn rate_limit(&self, rate: f64, field: &str) -> Result<f64, BatchError> {
        if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE_LIMIT {
            return Err(self.invalid(
                field,
                format!("must be more than 0 and at most {MAX_RATE_LIMIT} requests per second, got {rate}"),
            ));
        }
        Ok(rate)
    }

    fn pagination(
        &self,
        declared: PaginationToml,
        records: Option<&FieldPath>,
        field: &str,
    ) -> Result<Pagination, BatchError> {
        let at = |key: &str| format!("{field}.{key}");
        // A field of the response other than the records: those are taken
        // out of it before paging looks.
        let path = |key: &str, text: Option<String>| -> Result<Option<FieldPath>, BatchError> {
            let path = text
                .as_deref()
                .map(FieldPath::parse)
                .transpose()
                .map_err(|reason| self.invalid(at(key), reason))?;
            if let Some(path) = &path {
                match records {
                    None => {
                        return Err(self.invalid(
                            at(key),
                            format!(
                                "without `records` the whole response is the record array, so it has no field {path}; set records to the path of the array"
                            ),
                        ));
                    }
                    Some(records) if path.starts_with(records) => {
                        return Err(self.invalid(
                            at(key),
                            format!(
                                "{path:?} points into the records ({records:?}), which are not part of the response paging sees; to page by a field of the last record, use type = \"last_record\" with cursor_field = the field (e.g. \"id\")",
                                path = path.to_string(),
                                records = records.to_string()
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
            Ok(path)
        };
        let param =
            |key: &str, text: Option<String>, default: &str| -> Result<String, BatchError> {
                let name = text.unwrap_or_else(|| default.to_owned());
                if name.is_empty() {
                    return Err(self.invalid(at(key), "a query parameter name cannot be empty"));
                }
                Ok(name)
            };
        let pagination = match declared {
            PaginationToml::Single {} => Pagination::Single,
            PaginationToml::Offset {
                limit,
                offset_param,
                limit_param,
                start,
                has_more,
                next_offset,
                total,
                stop_on_short_page,
            } => Pagination::Offset(OffsetPaging {
                limit: self.at_least(limit, 1, &at("limit"))?,
                offset_param: param("offset_param", offset_param, "offset")?,
                limit_param: param("limit_param", limit_param, "limit")?,
                start: self.at_least(start.unwrap_or(0), 0, &at("start"))?,
                has_more: path("has_more", has_more)?,
                next_offset: path("next_offset", next_offset)?,
                total: path("total", total)?,
                stop_on_short_page: stop_on_short_page.unwrap_or(true),
            }),
            PaginationToml::PageNumber {
                page_param,
                start,
                page_size,
                page_size_param,
                has_more,
                total_pages,
                stop_on_short_page,
            } => {
                let page_size = page_size
                    .map(|size| self.at_least(size, 1, &at("page_size")))
                    .transpose()?;
                if page_size.is_none() && stop_on_short_page == Some(true) {
                    return Err(self.invalid(
                        at("stop_on_short_page"),
                        "a page is short only against a page_size; set page_size too",
                    ));
                }
                if page_size.is_none() && page_size_param.is_some() {
                    return Err(self.invalid(
                        at("page_size_param"),
                        "without page_size there is no page size to send; set page_size too",
                    ));
                }
                Pagination::PageNumber(PageNumberPaging {
                    page_param: param("page_param", page_param, "page")?,
                    start: self.at_least(start.unwrap_or(1), 0, &at("start"))?,
                    page_size,
                    page_size_param: param("page_size_param", page_size_param, "page_size")?,
                    has_more: path("has_more", has_more)?,
                    total_pages: path("total_pages", total_pages)?,
                    stop_on_short_page: stop_on_short_page.unwrap_or(page_size.is_some()),
                })
            }
            PaginationToml::Cursor {
                cursor,
                cursor_param,
                has_more,
            } => Pagination::Cursor(CursorPaging {
                cursor: path("cursor", Some(cursor))?
                    .ok_or_else(|| self.invalid(at("cursor"), "required"))?,
                cursor_param: param("cursor_param", cursor_param, "cursor")?,
                has_more: path("has_more", has_more)?,
            }),
            PaginationToml::HeaderCursor {
                cursor_header,
                cursor_param,
                has_more,
            } => {
                let header = HeaderName::from_bytes(cursor_header.as_bytes()).map_err(|_| {
                    self.invalid(at("cursor_header"), "not a valid HTTP header name")
                })?;
                Pagination::HeaderCursor(HeaderCursorPaging {
                    cursor_header: header.as_str().to_owned(),
                    cursor_param: param("cursor_param", cursor_param, "cursor")?,
                    has_more: path("has_more", has_more)?,
                })
            }
            PaginationToml::LastRecord {
                cursor_field,
                cursor_param,
                has_more,
            } => Pagination::LastRecord(LastRecordPaging {
                cursor_field: FieldPath::parse(&cursor_field)
                    .map_err(|reason| self.invalid(at("cursor_field"), reason))?,
                cursor_param: param("cursor_param", Some(cursor_param), "")?,
                has_more: path("has_more", has_more)?,
            }),
            PaginationToml::NextLink { next_url, has_more } => {
                Pagination::NextLink(NextLinkPaging {
                    next_url: path("next_url", Some(next_url))?
                        .ok_or_else(|| self.invalid(at("next_url"), "required"))?,
                    has_more: path("has_more", has_more)?,
                })
            }
            PaginationToml::LinkHeader { rel, has_more } => {
                let rel = rel.unwrap_or_else(|| "next".to_owned());
                if rel.is_empty() || !rel.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
                    return Err(self.invalid(
                        at("rel"),
                        format!("{rel:?} is not a link relation; write one word, e.g. \"next\""),
                    ));
                }
                Pagination::LinkHeader(LinkHeaderPaging {
                    rel,
                    has_more: path("has_more", has_more)?,
                })
            }
            PaginationToml::Repeat { has_more } => Pagination::Repeat(RepeatPaging {
                has_more: path("has_more", has_more)?,
            }),
        };
        let params = pagination.query_params();
        for (index, (name, setting)) in params.iter().enumerate() {
            if let Some((_, other)) = params[..index].iter().find(|(other, _)| other == name) {
                return Err(self.invalid(
                    at(setting),
                    format!("{name:?} is also pagination.{other}; the two parameters need different names"),
                ));
            }
        }
        Ok(pagination)
    }

    fn at_least(&self, value: i64, min: i64, field: &str) -> Result<u64, BatchError> {
        if value < min {
            return Err(self.invalid(field, format!("must be {min} or more, got {value}")));
        }
        u64::try_from(value).map_err(|_| self.invalid(field, "out of range"))
    }

    fn prefix(&self, prefix: String, field: &str) -> Result<String, BatchError> {
        if !prefix.ends_with('/') {
            return Err(self.invalid(
                field,
                format!("{prefix:?} must end with '/', e.g. \"users/\""),
            ));
        }
        if let Err(err) = ObjectKey::new(format!("{prefix}part")) {
            return Err(self.invalid(
                field,
                format!("{prefix:?} is not a valid lake prefix: {err}"),
            ));
        }
        if prefix.starts_with(WEBHOOK_EVENTS_PREFIX) || WEBHOOK_EVENTS_PREFIX.starts_with(&prefix) {
            return Err(self.invalid(
                field,
                format!(
                    "{prefix:?} overlaps {WEBHOOK_EVENTS_PREFIX:?}, which holds the webhook's events; pulled events go under \"api_events/\""
                ),
            ));
        }
        Ok(prefix)
    }

    fn timeout(&self, timeout: Duration, field: &str) -> Result<Duration, BatchError> {
        if timeout.is_zero() {
            return Err(self.invalid(field, "must be more than 0s"));
        }
        self.at_most_wait(timeout, field)?;
        Ok(timeout)
    }

    fn retry(
        &self,
        declared: &RetryToml,
        defaults: RetryPolicy,
        field: &str,
    ) -> Result<RetryPolicy, BatchError> {
        let at = |key: &str| format!("{field}.{key}");
        let attempts = match declared.attempts {
            Some(attempts) => {
                let attempts = self.at_least(attempts, 1, &at("attempts"))?;
                u32::try_from(attempts)
                    .ok()
                    .filter(|attempts| *attempts <= MAX_ATTEMPTS)
                    .ok_or_else(|| {
                        self.invalid(
                            at("attempts"),
                            format!("must be {MAX_ATTEMPTS} or less, got {attempts}"),
                        )
                    })?
            }
            None => defaults.attempts,
        };
        let policy = RetryPolicy {
            attempts,
            initial_backoff: declared
                .initial_backoff
                .map_or(defaults.initial_backoff, |d| d.0),
            max_backoff: declared.max_backoff.map_or(defaults.max_backoff, |d| d.0),
            max_retry_after: declared
                .max_retry_after
                .map_or(defaults.max_retry_after, |d| d.0),
        };
        if policy.initial_backoff.is_zero() {
            return Err(self.invalid(at("initial_backoff"), "must be more than 0s"));
        }
        self.at_most_wait(policy.max_backoff, &at("max_backoff"))?;
        self.at_most_wait(policy.max_retry_after, &at("max_retry_after"))?;
        if policy.max_backoff < policy.initial_backoff {
            return Err(self.invalid(
                at("max_backoff"),
                format!(
                    "{} is below initial_backoff ({})",
                    humantime::format_duration(policy.max_backoff),
                    humantime::format_duration(policy.initial_backoff)
                ),
            ));
        }
        Ok(policy)
    }

    fn at_most_wait(&self, wait: Duration, field: &str) -> Result<(), BatchError> {
        if wait > MAX_WAIT {
            return Err(self.invalid(
                field,
                format!(
                    "must be {} or less, got {}",
                    humantime::format_duration(MAX_WAIT),
                    humantime::format_duration(wait)
                ),
            ));
        }
        Ok(())
    }

    fn limits(&self, declared: &LimitsToml, field: &str) -> Result<LimitOverrides, BatchError> {
        let at = |key: &str| format!("{field}.{key}");
        let overrides = LimitOverrides {
            max_response_bytes: declared.max_response_size.map(|size| size.0),
            max_redirects: declared
                .max_redirects
                .map(|redirects| {
                    u32::try_from(redirects).map_err(|_| {
                        self.invalid(
                            at("max_redirects"),
                            format!(
                                "must be between 0 and {MAX_REDIRECTS_CEILING}, got {redirects}"
                            ),
                        )
                    })
                })
                .transpose()?,
            max_pages: declared
                .max_pages
                .map(|pages| self.at_least(pages, 1, &at("max_pages")))
                .transpose()?,
        };
        // Checked against the ranges with the defaults in the unset places.
        overrides
            .over(RunLimits::default())
            .check()
            .map_err(|(key, reason)| self.invalid(at(key), reason))?;
        Ok(overrides)
    }

    fn parts(
        &self,
        declared: &PartsToml,
        defaults: PartLimits,
        field: &str,
    ) -> Result<PartLimits, BatchError> {
        let at = |key: &str| format!("{field}.{key}");
        let max_records = match declared.max_records {
            Some(records) => self.at_least(records, 1, &at("max_records"))?,
            None => defaults.max_records,
        };
        let max_bytes = declared.max_bytes.map_or(defaults.max_bytes, |size| size.0);
        let limit = DEFAULT_MAX_OBJECT_SIZE.bytes();
        if max_bytes == 0 || max_bytes > limit {
            return Err(self.invalid(
                at("max_bytes"),
                format!(
                    "must be between 1 byte and the lake's object limit, {DEFAULT_MAX_OBJECT_SIZE}"
                ),
            ));
        }
        Ok(PartLimits {
            max_records,
            max_bytes,
        })
    }

    fn stop(&self, declared: &StopToml, field: &str) -> Result<StopRule, BatchError> {
        let at = |key: &str| format!("{field}.{key}");
        Ok(StopRule {
            max_pages: declared
                .max_pages
                .map(|pages| self.at_least(pages, 1, &at("max_pages")))
                .transpose()?,
            max_records: declared
                .max_records
                .map(|records| self.at_least(records, 1, &at("max_records")))
                .transpose()?,
        })
    }

    fn headers(
        &self,
        declared: &BTreeMap<String, String>,
        field: &str,
    ) -> Result<HeaderMap, BatchError> {
        let mut headers = HeaderMap::new();
        for (name, value) in declared {
            let at = format!("{field}.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.invalid(&at, "not a valid HTTP header name"))?;
            let (value, _) = self.expand(value, &at)?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| self.invalid(&at, "a header value is visible ASCII"))?;
            // Configured headers are API keys as often as not: keep them out
            // of Debug output and HTTP/2 header compression tables.
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(headers)
    }

    fn transform(&self, declared: TransformToml, field: &str) -> Result<Transform, BatchError> {
        let metadata = declared.metadata.unwrap_or(true);
        let mut targets = HashSet::new();
        for (from, to) in &declared.rename {
            let at = format!("{field}.rename.{from}");
            if to.is_empty() {
                return Err(self.invalid(at, "the new name cannot be empty"));
            }
            if !targets.insert(to.as_str()) {
                return Err(self.invalid(at, format!("another field is renamed to {to:?} too")));
            }
            if metadata && METADATA_FIELDS.contains(&to.as_str()) {
                return Err(self.invalid(
                    at,
                    format!("{to:?} is run metadata and would be overwritten; pick another name or set metadata = false"),
                ));
            }
        }
        let mut dropped = HashSet::new();
        for name in &declared.drop {
            let at = format!("{field}.drop");
            if declared.rename.contains_key(name) {
                return Err(self.invalid(
                    at,
                    format!("{name:?} is both dropped and renamed; keep one"),
                ));
            }
            if !dropped.insert(name.as_str()) {
                return Err(self.invalid(at, format!("{name:?} is listed twice")));
            }
        }
        Ok(Transform::new(
            metadata,
            declared.rename.into_iter().collect(),
            declared.drop,
        ))
    }
}

/// A base URL: http or https, with a host, no query or fragment; the path
/// always ends with `/` so that a relative path appends to it. Its userinfo
/// is taken out, as the credentials to send; messages never quote it.
pub(super) fn parse_base_url(text: &str) -> Result<(Url, Option<Credentials>), String> {
    let shown = redact::text(text);
    let mut url = Url::parse(text).map_err(|err| format!("{shown:?} is not a URL: {err}"))?;
    let credentials = Credentials::take_from(&mut url);
    let shown = url.as_str();
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?} is not an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{shown:?} has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{:?} has a query or fragment; put query parameters under a pipeline's `query`",
            redact::url(&url)
        ));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok((url, credentials))
}

/// Pipeline names end up in lake keys, metric labels and command lines.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid pipeline name: 1 to 64 lower-case letters, digits, '_' or '-', starting with a letter or digit"
        ))
    }
}
