//! Reading a directory lake the way an analyst would: the NDJSON records
//! of its objects, never the lake's own bookkeeping under `.vesper/`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The lake's own directory (tombstones, upload staging): not data.
const BOOKKEEPING: &str = ".vesper";

/// Every record of every `.ndjson` object under `prefix` (a directory of
/// the lake, `""` for all of it), keyed by object key (`/`-separated,
/// relative to the lake). A missing prefix is an empty map.
pub fn lake_records(lake: &Path, prefix: &str) -> BTreeMap<String, Vec<Value>> {
    let mut objects = BTreeMap::new();
    let mut pending: Vec<PathBuf> = vec![lake.join(prefix)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a lake directory entry").path();
            if path.file_name().is_some_and(|name| name == BOOKKEEPING) {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "ndjson") {
                let key = path
                    .strip_prefix(lake)
                    .expect("under the lake")
                    .components()
                    .map(|part| part.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
                let records = text
                    .lines()
                    .map(|line| {
                        serde_json::from_str(line)
                            .unwrap_or_else(|err| panic!("{key}: not a JSON line ({err}): {line}"))
                    })
                    .collect();
                objects.insert(key, records);
            }
        }
    }
    objects
}

/// Every event id in the lake's `events/` objects, with how many times it
/// occurs.
pub fn lake_event_ids(lake: &Path) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for record in lake_records(lake, "events").values().flatten() {
        let id = record["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("an event without an event_id: {record}"));
        *ids.entry(id.to_owned()).or_default() += 1;
    }
    ids
}

/// Asserts that the lake holds every `acknowledged` event and no event
/// twice, and returns its event ids (an event may be there that was never
/// acknowledged, as when a process died before it answered).
pub fn assert_each_acknowledged_event_once<'a>(
    lake: &Path,
    acknowledged: impl IntoIterator<Item = &'a String>,
) -> BTreeMap<String, usize> {
    let in_lake = lake_event_ids(lake);
    let missing: Vec<&String> = acknowledged
        .into_iter()
        .filter(|id| !in_lake.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing from the lake, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let copies: Vec<_> = in_lake.iter().filter(|(_, count)| **count > 1).collect();
    assert!(copies.is_empty(), "events in the lake twice: {copies:?}");
    in_lake
}
