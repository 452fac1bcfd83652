//! Validation of pipeline files: the built-in one, and wrong ones caught at
//! load time with the setting named.

use super::*;

#[test]
fn the_builtin_pipelines_load_in_declaration_order() {
    let pipelines = Pipelines::builtin().expect("built-in pipelines");
    assert_eq!(pipelines.names(), ["users", "content", "events"]);

    let users = pipelines.get("users").expect("users");
    assert_eq!(
        users.first_url().as_str(),
        "http://127.0.0.1:8080/api/users?offset=0&limit=200"
    );
    assert_eq!(users.prefix(), "users/");
    assert_eq!(users.describe_pagination(), "offset (limit 200)");
    assert_eq!(users.retry().attempts, 5, "the file's defaults apply");
    assert_eq!(users.timeout(), Duration::from_secs(30));
    assert_eq!(users.stop(), StopRule::default());

    let content = pipelines.get("content").expect("content");
    assert_eq!(
        content.first_url().as_str(),
        "http://127.0.0.1:8080/api/content"
    );
    assert_eq!(content.describe_pagination(), "single page");

    let events = pipelines.get("events").expect("events");
    assert_eq!(
        events.first_url().as_str(),
        "http://127.0.0.1:8080/api/events?count=200"
    );
    assert_eq!(events.prefix(), "api_events/");
    assert!(
        events.timeout() < Duration::from_secs(10),
        "below the 10 s stall"
    );
    assert_eq!(events.retry().attempts, 8);
    assert_eq!(
        events.retry().initial_backoff,
        Duration::from_millis(250),
        "unset retry keys come from the defaults"
    );
    assert_eq!(events.stop().describe(), "max 10 pages");
    assert_eq!(events.describe_pagination(), "repeat while has_more");

    let info = users.info();
    assert_eq!(info.name, "users");
    assert_eq!(
        info.url,
        "http://127.0.0.1:8080/api/users?offset=0&limit=200"
    );
    assert_eq!(info.stop, "");
}

#[test]
fn the_source_url_replaces_the_file_base_but_not_a_pipelines_own() {
    let text = r#"
        base_url = "http://file.test/api/"
        [pipelines.a]
        path = "a"
        [pipelines.b]
        base_url = "http://own.test/v2"
        path = "/b"
    "#;
    let pipelines = Pipelines::from_toml(text, "test.toml")
        .expect("valid")
        .with_source_url("http://127.0.0.1:9090/api")
        .expect("a valid source URL");
    let a = pipelines.get("a").expect("a");
    assert_eq!(a.first_url().as_str(), "http://127.0.0.1:9090/api/a");
    let b = pipelines.get("b").expect("b");
    assert_eq!(b.first_url().as_str(), "http://own.test/v2/b");

    let err = Pipelines::from_toml(text, "test.toml")
        .expect("valid")
        .with_source_url("ftp://x")
        .expect_err("not http");
    assert!(err.to_string().starts_with("--source-url"), "{err}");
}

#[test]
fn every_paginator_loads() {
    let text = r#"
        [pipelines.offset]
        records = "data"
        pagination = { type = "offset", limit = 50, offset_param = "skip", limit_param = "take", start = 10, has_more = "meta.more", next_offset = "meta.next", total = "meta.total", stop_on_short_page = false }
        [pipelines.pages]
        records = "data"
        pagination = { type = "page_number", page_param = "p", start = 0, page_size = 25, page_size_param = "per_page", total_pages = "pages" }
        [pipelines.cursor]
        records = "data"
        pagination = { type = "cursor", cursor = "next_cursor", cursor_param = "after" }
        [pipelines.links]
        records = "data"
        pagination = { type = "next_link", next_url = "links.next" }
        [pipelines.feed]
        pagination = { type = "repeat" }
        stop = { max_records = 1000 }
        [pipelines.github]
        pagination = { type = "link_header" }
        [pipelines.header_cursor]
        pagination = { type = "header_cursor", cursor_header = "X-Next-Cursor", cursor_param = "after" }
        [pipelines.stripe]
        records = "data"
        query = { limit = 100 }
        pagination = { type = "last_record", cursor_field = "id", cursor_param = "starting_after", has_more = "has_more" }
    "#;
    let pipelines = Pipelines::from_toml(text, "test.toml").expect("valid");
    let urls: Vec<_> = pipelines
        .iter()
        .map(|p| p.first_url().to_string())
        .collect();
    assert_eq!(
        urls,
        [
            "http://127.0.0.1:8080/api/?skip=10&take=50",
            "http://127.0.0.1:8080/api/?p=0&per_page=25",
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api/",
            "http://127.0.0.1:8080/api/?limit=100",
        ]
    );
    let described: Vec<_> = pipelines
        .iter()
        .skip(5)
        .map(Pipeline::describe_pagination)
        .collect();
    assert_eq!(
        described,
        [
            "link header (rel=\"next\")",
            "header cursor (x-next-cursor header -> ?after)",
            "last record (id -> ?starting_after)",
        ]
    );
    let prefixes: Vec<_> = pipelines.iter().map(Pipeline::prefix).collect();
    assert_eq!(
        prefixes,
        [
            "offset/",
            "pages/",
            "cursor/",
            "links/",
            "feed/",
            "github/",
            "header_cursor/",
            "stripe/"
        ]
    );
}

#[test]
fn a_paging_field_inside_the_records_is_refused_with_the_way_to_say_it() {
    assert_eq!(
        error_of(
            r#"records = "data"
            pagination = { type = "cursor", cursor = "data.99.id", cursor_param = "starting_after" }"#
        ),
        "test.toml: pipelines.x.pagination.cursor: \"data.99.id\" points into the records (\"data\"), which are not part of the response paging sees; to page by a field of the last record, use type = \"last_record\" with cursor_field = the field (e.g. \"id\")"
    );
    assert_eq!(
        error_of(r#"pagination = { type = "next_link", next_url = "next" }"#),
        "test.toml: pipelines.x.pagination.next_url: without `records` the whole response is the record array, so it has no field next; set records to the path of the array"
    );
}

#[test]
fn secrets_come_from_the_environment_or_a_file_and_are_never_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "file-secret-value\n").expect("write");
    // PATH is set in every environment the tests run in; its value stands
    // in for a secret.
    let path_value = std::env::var("PATH").expect("PATH");
    let text = format!(
        r#"
        [pipelines.x]
        query = {{ appid = "${{file:{}}}", plain = "$${{literal}}" }}
        headers = {{ Authorization = "Bearer ${{env:PATH}}" }}
        "#,
        token_file.display()
    );
    let pipelines = Pipelines::from_toml(&text, "test.toml").expect("valid");
    let x = pipelines.get("x").expect("x");
    assert_eq!(
        x.first_url().as_str(),
        "http://127.0.0.1:8080/api/?appid=file-secret-value&plain=%24%7Bliteral%7D"
    );
    assert_eq!(
        x.headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {path_value}").as_str())
    );
    assert_eq!(
        x.display_url(),
        "http://127.0.0.1:8080/api/?appid=***&plain=%24%7Bliteral%7D",
        "a query value from a secret is masked whatever its name"
    );
    let debug = format!("{pipelines:?}");
    assert!(!debug.contains("file-secret-value"), "{debug}");
    assert!(!debug.contains(&path_value), "{debug}");

    assert_eq!(
        error_of(r#"headers = { Authorization = "Bearer ${API_TOKEN}" }"#),
        "test.toml: pipelines.x.headers.Authorization: ${API_TOKEN} is not a reference this file format knows; write ${env:API_TOKEN} for an environment variable or ${file:PATH} for a file (and $${ for a literal ${)"
    );
    assert_eq!(
        error_of(r#"headers = { Authorization = "Bearer ${env:VESPER_TEST_SURELY_UNSET_TOKEN}" }"#),
        "test.toml: pipelines.x.headers.Authorization: ${env:VESPER_TEST_SURELY_UNSET_TOKEN}: the environment variable VESPER_TEST_SURELY_UNSET_TOKEN is not set"
    );
    let missing = dir.path().join("absent");
    let err = error_of(&format!(
        r#"query = {{ key = "${{file:{}}}" }}"#,
        missing.display()
    ));
    assert!(
        err.starts_with(&format!(
            "test.toml: pipelines.x.query.key: ${{file:{}}}: cannot open the file",
            missing.display()
        )),
        "{err}"
    );
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 70 * 1024]).expect("write");
    let err = error_of(&format!(
        r#"query = {{ key = "${{file:{}}}" }}"#,
        big.display()
    ));
    assert!(
        err.ends_with("the file is over 64 KiB; a secret file holds one value"),
        "{err}"
    );
    assert!(
        error_of(r#"rate_limit = 0"#).ends_with(
            "rate_limit: must be more than 0 and at most 10000 requests per second, got 0"
        ),
        "{}",
        error_of(r#"rate_limit = 0"#)
    );
}

/// Loads `pipeline` (the body of `[pipelines.x]`) and returns the error.
fn error_of(pipeline: &str) -> String {
    let text = format!("[pipelines.x]\n{pipeline}\n");
    Pipelines::from_toml(&text, "test.toml")
        .expect_err(pipeline)
        .to_string()
}

#[test]
fn wrong_pagination_settings_are_refused_with_the_field_named() {
    for (pipeline, expected) in [
        (
            r#"pagination = { type = "offset", limit = 0 }"#,
            "test.toml: pipelines.x.pagination.limit: must be 1 or more, got 0",
        ),
        (
            r#"pagination = { type = "offset", limit = -5 }"#,
            "pipelines.x.pagination.limit: must be 1 or more",
        ),
        (
            r#"pagination = { type = "offset", limit = 10, start = -1 }"#,
            "pipelines.x.pagination.start: must be 0 or more",
        ),
        (
            r#"pagination = { type = "offset", limit = 10, limit_param = "offset" }"#,
            "pipelines.x.pagination.limit_param: \"offset\" is also pagination.offset_param",
        ),
        (
            r#"pagination = { type = "offset", limit = 10, has_more = "meta..more" }"#,
            "pipelines.x.pagination.has_more: \"meta..more\" has an empty segment",
        ),
        (
            r#"pagination = { type = "offset", limit = 10, offset_param = "" }"#,
            "pipelines.x.pagination.offset_param: a query parameter name cannot be empty",
        ),
        (
            r#"pagination = { type = "page_number", stop_on_short_page = true }"#,
            "pipelines.x.pagination.stop_on_short_page: a page is short only against a page_size",
        ),
        (
            r#"pagination = { type = "page_number", page_size = 0 }"#,
            "pipelines.x.pagination.page_size: must be 1 or more",
        ),
        (
            r#"pagination = { type = "cursor", cursor = "" }"#,
            "pipelines.x.pagination.cursor: a field path cannot be empty",
        ),
        (
            r#"pagination = { type = "repeat" }"#,
            "pipelines.x.stop: a repeat paginator only ends when the API says so",
        ),
        (
            r#"pagination = { type = "offset", limit = 10 }
               query = { offset = 5 }"#,
            "pipelines.x.query.offset: the paginator sets \"offset\" itself (pagination.offset_param)",
        ),
    ] {
        let err = error_of(pipeline);
        assert!(
            err.contains(expected),
            "{pipeline}\n  got: {err}\n  expected: {expected}"
        );
    }
}

#[test]
fn unknown_keys_and_wrong_kinds_are_refused_by_the_parser() {
    for (pipeline, expected) in [
        (
            r#"pagination = { type = "offset", limt = 10 }"#,
            "unknown field `limt`",
        ),
        (
            r#"pagination = { type = "offset" }"#,
            "missing field `limit`",
        ),
        (
            r#"pagination = { type = "ofset", limit = 10 }"#,
            "unknown variant `ofset`",
        ),
        (
            r#"pagination = { type = "single", limit = 10 }"#,
            "unknown field `limit`",
        ),
        (
            r#"pagination = { type = "cursor", cursor = "c", limit = 10 }"#,
            "unknown field `limit`",
        ),
        (
            r#"pagination = { type = "offset", limit = "ten" }"#,
            "invalid type",
        ),
        (r#"recrods = "users""#, "unknown field `recrods`"),
        (r#"retry = { attempt = 3 }"#, "unknown field `attempt`"),
        (r#"timeout = "3 parsecs""#, "invalid duration"),
        (r#"parts = { max_bytes = "lots" }"#, "invalid size"),
    ] {
        let err = error_of(pipeline);
        assert!(err.starts_with("test.toml: "), "{err}");
        assert!(
            err.contains(expected),
            "{pipeline}\n  got: {err}\n  expected: {expected}"
        );
    }
}

#[test]
fn other_wrong_settings_are_refused_with_the_field_named() {
    for (pipeline, expected) in [
        (
            r#"base_url = "ftp://x.test/""#,
            "pipelines.x.base_url: \"ftp://x.test/\" is not an http",
        ),
        (
            r#"base_url = "not a url""#,
            "pipelines.x.base_url: \"not a url\" is not a URL",
        ),
        (
            r#"base_url = "http://x.test/?a=1""#,
            "pipelines.x.base_url: \"http://x.test/?a=1\" has a query",
        ),
        (
            r#"path = "users?offset=1""#,
            "pipelines.x.path: \"users?offset=1\" has a query",
        ),
        (
            r#"path = "http://x.test/users""#,
            "pipelines.x.path: \"http://x.test/users\" is a full URL",
        ),
        (
            r#"prefix = "events/""#,
            "pipelines.x.prefix: \"events/\" overlaps \"events/\"",
        ),
        (
            r#"prefix = "users""#,
            "pipelines.x.prefix: \"users\" must end with '/'",
        ),
        (
            r#"prefix = "../up/""#,
            "pipelines.x.prefix: \"../up/\" is not a valid lake prefix",
        ),
        (
            r#"records = "a..b""#,
            "pipelines.x.records: \"a..b\" has an empty segment",
        ),
        (
            r#"timeout = "0s""#,
            "pipelines.x.timeout: must be more than 0s",
        ),
        (
            r#"retry = { attempts = 0 }"#,
            "pipelines.x.retry.attempts: must be 1 or more",
        ),
        (
            r#"retry = { initial_backoff = "2s", max_backoff = "1s" }"#,
            "pipelines.x.retry.max_backoff: 1s is below initial_backoff (2s)",
        ),
        (
            r#"retry = { attempts = 1000 }"#,
            "pipelines.x.retry.attempts: must be 100 or less, got 1000",
        ),
        (
            r#"retry = { max_backoff = "2h" }"#,
            "pipelines.x.retry.max_backoff: must be 1h or less, got 2h",
        ),
        (
            r#"retry = { max_retry_after = "1day" }"#,
            "pipelines.x.retry.max_retry_after: must be 1h or less, got 1day",
        ),
        (
            r#"timeout = "2h""#,
            "pipelines.x.timeout: must be 1h or less, got 2h",
        ),
        (
            r#"limits = { max_response_size = 0 }"#,
            "pipelines.x.limits.max_response_size: must be between 1 byte and 1GiB",
        ),
        (
            r#"limits = { max_response_size = "2GiB" }"#,
            "pipelines.x.limits.max_response_size: must be between 1 byte and 1GiB",
        ),
        (
            r#"limits = { max_redirects = 21 }"#,
            "pipelines.x.limits.max_redirects: must be between 0 and 20, got 21",
        ),
        (
            r#"limits = { max_redirects = -1 }"#,
            "pipelines.x.limits.max_redirects: must be between 0 and 20, got -1",
        ),
        (
            r#"limits = { max_pages = 0 }"#,
            "pipelines.x.limits.max_pages: must be 1 or more, got 0",
        ),
        (
            r#"limits = { max_pages = 2000000 }"#,
            "pipelines.x.limits.max_pages: must be between 1 and 1000000, got 2000000",
        ),
        (r#"limits = { max_bytes = 1 }"#, "unknown field `max_bytes`"),
        (
            r#"parts = { max_records = 0 }"#,
            "pipelines.x.parts.max_records: must be 1 or more",
        ),
        (
            r#"parts = { max_bytes = "1GiB" }"#,
            "pipelines.x.parts.max_bytes: must be between",
        ),
        (
            r#"stop = { max_pages = 0 }"#,
            "pipelines.x.stop.max_pages: must be 1 or more",
        ),
        (
            r#"query = { ids = [1, 2] }"#,
            "pipelines.x.query.ids: a query value is a string",
        ),
        (
            r#"headers = { "bad header" = "x" }"#,
            "pipelines.x.headers.bad header: not a valid HTTP header name",
        ),
        (
            r#"transform = { rename = { id = "_run_id" } }"#,
            "pipelines.x.transform.rename.id: \"_run_id\" is run metadata",
        ),
        (
            r#"transform = { rename = { a = "c", b = "c" } }"#,
            "pipelines.x.transform.rename.b: another field is renamed to \"c\" too",
        ),
        (
            r#"transform = { rename = { id = "key" }, drop = ["id"] }"#,
            "pipelines.x.transform.drop: \"id\" is both dropped and renamed",
        ),
    ] {
        let err = error_of(pipeline);
        assert!(
            err.contains(expected),
            "{pipeline}\n  got: {err}\n  expected: {expected}"
        );
    }
}

#[test]
fn file_level_mistakes_are_refused() {
    for (text, expected) in [
        ("", "missing field `pipelines`"),
        ("[pipelines]\n", "pipelines: declare at least one pipeline"),
        (
            "[pipelines.Users]\n",
            "pipelines.Users: \"Users\" is not a valid pipeline name",
        ),
        (
            "[pipelines.a]\nprefix = \"lake/\"\n[pipelines.b]\nprefix = \"lake/b/\"\n",
            "pipelines.b.prefix: \"lake/b/\" overlaps pipeline \"a\"'s prefix \"lake/\"",
        ),
        ("base_url = \"http://\"\n[pipelines.a]\n", "base_url: "),
        (
            "[defaults]\ntimeout = \"0s\"\n[pipelines.a]\n",
            "defaults.timeout: must be more than 0s",
        ),
        (
            "[defaults]\nretries = 3\n[pipelines.a]\n",
            "unknown field `retries`",
        ),
    ] {
        let err = Pipelines::from_toml(text, "test.toml")
            .expect_err(text)
            .to_string();
        assert!(
            err.contains(expected),
            "{text}\n  got: {err}\n  expected: {expected}"
        );
    }
}

#[test]
fn a_missing_file_names_the_path() {
    let err = Pipelines::load(Path::new("/nonexistent/pipelines.toml")).expect_err("missing");
    assert!(
        err.to_string().contains("/nonexistent/pipelines.toml"),
        "{err}"
    );
}

#[test]
fn limits_come_from_the_pipeline_then_the_file_then_the_engine() {
    let text = r#"
        [defaults]
        limits = { max_response_size = "1MiB", max_pages = 50 }
        [pipelines.a]
        limits = { max_pages = 7 }
        [pipelines.b]
    "#;
    let pipelines = Pipelines::from_toml(text, "test.toml").expect("valid");
    let engine = RunLimits {
        max_response_bytes: 5,
        max_redirects: 3,
        max_pages: 9,
    };
    assert_eq!(
        pipelines.get("a").expect("a").limits(engine),
        RunLimits {
            max_response_bytes: 1024 * 1024,
            max_redirects: 3,
            max_pages: 7,
        }
    );
    assert_eq!(
        pipelines.get("b").expect("b").limits(engine),
        RunLimits {
            max_response_bytes: 1024 * 1024,
            max_redirects: 3,
            max_pages: 50,
        }
    );
    assert_eq!(
        Pipelines::builtin()
            .expect("built-in")
            .get("users")
            .expect("users")
            .limits(RunLimits::default()),
        RunLimits::default()
    );
}

#[test]
fn a_source_token_goes_only_to_pipelines_of_the_source() {
    let text = r#"
        base_url = "http://file.test/api/"
        [pipelines.a]
        path = "a"
        [pipelines.b]
        base_url = "http://own.test/v2"
        path = "/b"
        [pipelines.c]
        path = "c"
        headers = { Authorization = "Bearer its-own" }
    "#;
    let token = vesper::auth::Token::generate();
    let pipelines = Pipelines::from_toml(text, "test.toml")
        .expect("valid")
        .with_source_token(&token);
    let authorization = |name: &str| {
        pipelines
            .get(name)
            .expect(name)
            .headers
            .get(reqwest::header::AUTHORIZATION)
            .map(|value| value.to_str().expect("ascii").to_owned())
    };
    assert_eq!(
        authorization("a"),
        Some(format!("Bearer {}", token.expose()))
    );
    assert_eq!(authorization("b"), None, "another API never sees the token");
    assert_eq!(authorization("c").as_deref(), Some("Bearer its-own"));
    let shown = format!("{:?}", pipelines.get("a").expect("a"));
    assert!(!shown.contains(token.expose()), "{shown}");
}
