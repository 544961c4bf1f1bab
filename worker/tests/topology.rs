//! The committed RabbitMQ definitions file is exactly the topology the binaries declare.

use fraudsense_actors::{Settings, topology::Topology};

#[test]
fn definitions_json_matches_the_declared_topology() {
    let settings = Settings::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}"));
    let expected = Topology::from_settings(&settings.amqp).definitions("/");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/rabbitmq/definitions.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        committed, expected,
        "infra/rabbitmq/definitions.json is stale: regenerate it with `fraudsense-worker topology`"
    );
}

/// The file imports cleanly into a real broker (on a throwaway vhost) and creates what it says.
#[tokio::test]
async fn definitions_json_imports_into_rabbitmq() {
    let base = std::env::var("RABBITMQ_MANAGEMENT_URL").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let http = reqwest::Client::new();
    let vhost = format!("fstest-defs-{}", uuid::Uuid::new_v4().simple());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/rabbitmq/definitions.json");
    let text = std::fs::read_to_string(path)
        .unwrap_or_default()
        .replace("\"vhost\": \"/\"", &format!("\"vhost\": \"{vhost}\""));
    let mut defs: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    defs["vhosts"] = serde_json::json!([{ "name": vhost }]);

    let created =
        http.put(format!("{base}/api/vhosts/{vhost}")).basic_auth("guest", Some("guest")).send().await;
    assert!(created.is_ok_and(|r| r.status().is_success()), "cannot create vhost {vhost}");
    let imported = http
        .post(format!("{base}/api/definitions"))
        .basic_auth("guest", Some("guest"))
        .json(&defs)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = imported.status();
    let body = imported.text().await.unwrap_or_default();
    let queues: serde_json::Value = http
        .get(format!("{base}/api/queues/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    let _ = http.delete(format!("{base}/api/vhosts/{vhost}")).basic_auth("guest", Some("guest")).send().await;

    assert!(status.is_success(), "import refused ({status}): {body}");
    let names: Vec<&str> =
        queues.as_array().map(|q| q.iter().filter_map(|q| q["name"].as_str()).collect()).unwrap_or_default();
    assert!(
        names.contains(&"fraudsense.shard.0") && names.contains(&"fraudsense.transactions.dead"),
        "{names:?}"
    );
    let shard = queues
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == "fraudsense.shard.0"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(shard["arguments"]["x-single-active-consumer"], true);
    assert_eq!(shard["type"], "quorum");
}
