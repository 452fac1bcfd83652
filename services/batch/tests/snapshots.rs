//! What lands in the lake: the snapshot layout and manifest, transforms,
//! parts in order under concurrency, and re-runs side by side.

mod support;

use std::num::NonZeroUsize;

use serde_json::{Value, json};
use support::{Lake, PagedApi, Reply, ids, script};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use vesper::Shutdown;

#[tokio::test]
async fn a_run_writes_parts_then_a_manifest_in_the_documented_layout() {
    let api = PagedApi::start(25).await;
    let lake = Lake::start().await;
    let engine = lake.engine(&format!(
        r#"
        base_url = "{}"
        [pipelines.items]
        path = "offset"
        records = "data"
        prefix = "things/"
        pagination = {{ type = "offset", limit = 10 }}
        parts = {{ max_records = 12 }}
        "#,
        api.base_url()
    ));
    let report = engine
        .run(&["items"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    assert!(report.succeeded(), "{:?}", report.error);

    let date = report.started_at.date();
    let directory = format!(
        "things/dt={:04}-{:02}-{:02}/run={}/",
        date.year(),
        u8::from(date.month()),
        date.day(),
        report.run_id
    );
    assert_eq!(
        lake.keys("things/").await,
        [
            format!("{directory}_manifest.json"),
            format!("{directory}part-00000.ndjson"),
            format!("{directory}part-00001.ndjson"),
            format!("{directory}part-00002.ndjson"),
        ]
    );
    assert_eq!(
        report.manifest_key.as_deref(),
        Some(format!("{directory}_manifest.json").as_str())
    );
    assert_eq!(report.run_id.get_version_num(), 7, "run ids are UUIDv7");

    let manifest = lake.manifest(&format!("{directory}_manifest.json")).await;
    assert_eq!(manifest.pipeline, "items");
    assert_eq!(manifest.run_id, report.run_id.to_string());
    assert_eq!(
        manifest.source_url,
        format!("http://{}/offset?offset=0&limit=10", api.addr)
    );
    assert_eq!(manifest.records, 25);
    let part_records: Vec<_> = manifest.parts.iter().map(|part| part.records).collect();
    assert_eq!(part_records, [12, 12, 1]);
    assert_eq!(manifest.parts, report.parts);
    let started = OffsetDateTime::parse(&manifest.started_at, &Rfc3339).expect("RFC 3339");
    let finished = OffsetDateTime::parse(&manifest.finished_at, &Rfc3339).expect("RFC 3339");
    assert!(started <= finished);
    assert_eq!(
        ids(&lake.records(&manifest).await),
        (1..=25).collect::<Vec<_>>()
    );

    assert_eq!(report.records, 25);
    assert_eq!(report.pages, 3);
    assert_eq!(
        report.bytes,
        manifest.parts.iter().map(|part| part.bytes).sum::<u64>()
    );
    assert!(report.records_per_second() > 0.0);

    // The manifest's fields, exactly as the manifest example of docs/pipelines.md lists them.
    let (_, raw) = lake
        .store
        .get(&vesper_storage::ObjectKey::new(format!("{directory}_manifest.json")).expect("key"))
        .await
        .expect("manifest");
    let raw: Value = serde_json::from_slice(&raw).expect("JSON");
    let fields: Vec<_> = raw
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        fields,
        [
            "pipeline",
            "run_id",
            "source_url",
            "started_at",
            "finished_at",
            "records",
            "parts"
        ]
    );
    let part_fields: Vec<_> = raw["parts"][0]
        .as_object()
        .expect("a part")
        .keys()
        .cloned()
        .collect();
    assert_eq!(part_fields, ["key", "records", "bytes", "sha256"]);
}

#[tokio::test]
async fn transforms_add_metadata_rename_drop_and_run_hooks() {
    let server = script(vec![Reply::ok(json!({"users": [
        {"id": "u1", "age": 30, "password": "x", "status": "paid"},
        {"id": "u2", "age": 40, "password": "y", "status": "free"},
        {"id": "u3", "age": 50, "password": "z", "status": "paid"},
    ]}))])
    .await;
    let lake = Lake::start().await;
    let engine = lake
        .engine(&format!(
            r#"
            base_url = "{}"
            [pipelines.users]
            path = "users"
            records = "users"
            transform = {{ rename = {{ id = "user_id" }}, drop = ["password"] }}
            "#,
            server.base_url()
        ))
        // Hooks see the renamed record, and may change or drop it.
        .with_hook("users", |user| {
            (user.get("status") == Some(&json!("paid"))).then_some(user)
        })
        .expect("users is declared")
        .with_hook("users", |mut user| {
            let age = user.get("age").and_then(Value::as_u64).unwrap_or_default();
            user.insert(
                "age_group".into(),
                json!(if age < 45 { "25-44" } else { "45+" }),
            );
            Some(user)
        })
        .expect("users is declared");
    let report = engine
        .run(&["users"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(report.records, 2, "a hook dropped one");

    let manifest = lake.latest("users/").await.expect("manifest");
    let records = lake.records(&manifest).await;
    let url = format!("http://{}/users", server.addr);
    for (record, (id, group)) in records.iter().zip([("u1", "25-44"), ("u3", "45+")]) {
        let fields: Vec<_> = record
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            fields,
            [
                "user_id",
                "age",
                "status",
                "age_group",
                "_extracted_at",
                "_run_id",
                "_source_url"
            ]
        );
        assert_eq!(record["user_id"], id);
        assert_eq!(record["age_group"], group);
        assert_eq!(record["_run_id"], report.run_id.to_string());
        assert_eq!(record["_source_url"], url);
        let extracted = record["_extracted_at"].as_str().expect("a string");
        let extracted = OffsetDateTime::parse(extracted, &Rfc3339).expect("RFC 3339");
        assert!(extracted >= report.started_at && extracted <= report.finished_at);
    }
}

#[tokio::test]
async fn a_hook_for_an_undeclared_pipeline_is_refused() {
    let lake = Lake::start().await;
    let err = lake
        .engine("[pipelines.users]\n")
        .with_hook("user", Some)
        .expect_err("no such pipeline");
    assert_eq!(
        err.to_string(),
        "unknown pipeline \"user\"; declared: users"
    );
}

#[tokio::test]
async fn metadata_can_be_turned_off() {
    let server = script(vec![Reply::ok(json!([{"id": 1}]))]).await;
    let lake = Lake::start().await;
    let report = lake
        .engine(&format!(
            "base_url = \"{}\"\n[pipelines.raw]\ntransform = {{ metadata = false }}\n",
            server.base_url()
        ))
        .run(&["raw"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    assert!(report.succeeded(), "{:?}", report.error);
    let manifest = lake.latest("raw/").await.expect("manifest");
    assert_eq!(lake.records(&manifest).await, [json!({"id": 1})]);
}

#[tokio::test]
async fn concurrent_pages_are_written_in_order() {
    // Lower offsets answer later, so pages complete in reverse order.
    let api = PagedApi::start_with(200, u64::MAX, true).await;
    let lake = Lake::start().await;
    let pipelines = format!(
        r#"
        base_url = "{}"
        [pipelines.items]
        path = "offset"
        records = "data"
        pagination = {{ type = "offset", limit = 10, total = "total" }}
        parts = {{ max_records = 7 }}
        "#,
        api.base_url()
    );
    let report = lake
        .engine(&pipelines)
        .with_concurrency(NonZeroUsize::new(8).expect("8"))
        .run(&["items"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    assert!(report.succeeded(), "{:?}", report.error);
    assert_eq!(api.hits().len(), 20);
    assert_eq!(api.max_in_flight(), 8, "up to --concurrency pages at once");

    let manifest = lake.latest("items/").await.expect("manifest");
    assert_eq!(manifest.parts.len(), 29, "200 records in parts of 7");
    for (index, part) in manifest.parts.iter().enumerate() {
        assert!(
            part.key.ends_with(&format!("part-{index:05}.ndjson")),
            "{}",
            part.key
        );
    }
    let records = lake.records(&manifest).await;
    assert_eq!(ids(&records), (1..=200).collect::<Vec<_>>());
    // Each record's source URL is its own page's.
    assert_eq!(
        records[57]["_source_url"],
        format!("http://{}/offset?offset=50&limit=10", api.addr)
    );
}

#[tokio::test]
async fn re_running_makes_a_second_valid_snapshot_beside_the_first() {
    let api = PagedApi::start(30).await;
    let lake = Lake::start().await;
    let engine = lake.engine(&format!(
        r#"
        base_url = "{}"
        [pipelines.items]
        path = "offset"
        records = "data"
        pagination = {{ type = "offset", limit = 10 }}
        "#,
        api.base_url()
    ));
    let first = engine
        .run(&["items"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    let second = engine
        .run(&["items"], &Shutdown::new())
        .await
        .expect("run")
        .remove(0);
    assert!(first.succeeded() && second.succeeded());
    assert!(second.run_id > first.run_id, "run ids sort by time");

    let manifests = lake.manifests("items/").await;
    assert_eq!(manifests.len(), 2);
    for manifest in &manifests {
        assert_eq!(
            ids(&lake.records(manifest).await),
            (1..=30).collect::<Vec<_>>()
        );
    }
    let latest = lake.latest("items/").await.expect("latest");
    assert_eq!(latest.run_id, second.run_id.to_string());
}

#[tokio::test]
async fn unknown_names_are_refused_before_anything_runs() {
    let api = PagedApi::start(5).await;
    let lake = Lake::start().await;
    let engine = lake.engine(&format!(
        "base_url = \"{}\"\n[pipelines.items]\npath = \"offset\"\nrecords = \"data\"\n",
        api.base_url()
    ));
    let err = engine
        .run(&["items", "nope"], &Shutdown::new())
        .await
        .expect_err("an unknown name");
    assert_eq!(
        err.to_string(),
        "unknown pipeline \"nope\"; declared: items"
    );
    assert!(api.hits().is_empty(), "nothing ran");
}

#[tokio::test]
async fn a_failed_pipeline_does_not_stop_the_next() {
    let server = script(vec![
        Reply::Json(404, json!({"error": "no such thing"})),
        Reply::ok(json!([{"id": 1}])),
    ])
    .await;
    let lake = Lake::start().await;
    let reports = lake
        .engine(&format!(
            "base_url = \"{}\"\n[pipelines.first]\npath = \"a\"\n[pipelines.second]\npath = \"b\"\n",
            server.base_url()
        ))
        .run(&[] as &[&str], &Shutdown::new())
        .await
        .expect("run");
    assert_eq!(reports.len(), 2);
    assert!(!reports[0].succeeded());
    assert!(reports[1].succeeded(), "{:?}", reports[1].error);
    assert!(lake.latest("first/").await.is_none());
    assert!(lake.latest("second/").await.is_some());
}
