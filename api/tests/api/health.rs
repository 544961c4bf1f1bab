use crate::helpers::spawn_app;

#[tokio::test]
async fn health_and_ready_report_up_when_everything_answers() {
    let app = spawn_app().await;
    assert_eq!(app.get("/health").await.status().as_u16(), 200);
    let ready = app.get("/ready").await;
    let status = ready.status().as_u16();
    let text = ready.text().await.unwrap_or_default();
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert_eq!(body["checks"]["postgres"], "up");
    assert_eq!(body["checks"]["redis"], "up");
    assert_eq!(body["checks"]["rabbitmq"], "up");
    app.teardown().await;
}
