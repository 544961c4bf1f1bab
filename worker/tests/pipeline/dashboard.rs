//! The analyst dashboard in a real headless Chromium against the whole pipeline: a HIGH
//! payment posted through the api shows up live, acknowledging it in the page persists, and
//! after the api restarts the page reconnects and shows what was raised meanwhile.
//! Each test leaves a screenshot in `target/test-artifacts/`.

use std::time::{Duration, Instant};

use fraudsense_actors::auth::Role;
use serde_json::{Value, json};

use crate::{
    browser::Browser,
    helpers::{DEADLINE, Pipeline, spawn_pipeline, transaction},
};

/// The issue's promise: a HIGH payment is on the analyst's screen this soon after it was accepted.
const ON_SCREEN_WITHIN: Duration = Duration::from_secs(2);

/// The alert id of the row showing `account`'s alert, or `null`.
const ROW_OF_ACCOUNT: &str = r##"
    const row = Array.from(document.querySelectorAll("#alerts tbody tr[data-alert-id]"))
        .find((r) => r.querySelector("td.account").textContent === arguments[0]);
    return row ? Number(row.dataset.alertId) : null;"##;

/// Every row as `{id, account, status}`, top to bottom.
const ROWS: &str = r##"
    return Array.from(document.querySelectorAll("#alerts tbody tr[data-alert-id]")).map((r) => ({
        id: Number(r.dataset.alertId),
        account: r.querySelector("td.account").textContent,
        status: r.querySelector("td.status").dataset.status,
    }));"##;

/// The connection indicator's state when it is `arguments[0]`, else `null`.
const CONNECTION_IS: &str = r##"
    const state = document.querySelector("#connection").dataset.state;
    return state === arguments[0] ? state : null;"##;

/// Whether the sign-in box shows (`true`), else `null`.
const SIGN_IN_SHOWN: &str = r##"return document.querySelector("#signin").hidden ? null : true;"##;

/// Opens the dashboard and signs in as the analyst `dana` by pasting a token.
async fn open_dashboard(p: &Pipeline) -> Browser {
    let browser = Browser::start().await;
    browser.client.goto(&format!("http://{}/dashboard", p.api)).await.unwrap_or_else(|e| panic!("{e}"));
    let token = p.env.token("dana", &[Role::Analyst]);
    sign_in(&browser, &token).await;
    connection_becomes(&browser, "live").await;
    // Signed in as the token's subject; the token is in this tab's session storage only,
    // never in the address bar or in persistent storage.
    let who = browser.eval(r##"return document.querySelector("#whoami").textContent;"##, vec![]).await;
    assert_eq!(who, "dana · analyst");
    let toast = r##"const t = document.querySelector("#toast"); return t.hidden ? "" : t.textContent;"##;
    assert_eq!(browser.eval(toast, vec![]).await, "", "the page reported an error");
    let url = browser.client.current_url().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!url.as_str().contains(&token), "the token is in the URL");
    let stored = browser
        .eval(
            r##"return [sessionStorage.getItem("fraudsense.token"), JSON.stringify(localStorage)];"##,
            vec![],
        )
        .await;
    assert_eq!(stored, json!([token, "{}"]));
    browser
}

async fn sign_in(browser: &Browser, token: &str) {
    browser.wait_for(DEADLINE, "the sign-in box", SIGN_IN_SHOWN, &[]).await;
    browser.find("#token").await.send_keys(token).await.unwrap_or_else(|e| panic!("{e}"));
    browser.click("#signin-form button[type=submit]").await;
}

async fn connection_becomes(browser: &Browser, state: &str) {
    browser.wait_for(DEADLINE, &format!("connection {state}"), CONNECTION_IS, &[json!(state)]).await;
}

async fn row_of(browser: &Browser, account: &str, within: Duration) -> i64 {
    let id =
        browser.wait_for(within, &format!("a row for {account}"), ROW_OF_ACCOUNT, &[json!(account)]).await;
    id.as_i64().unwrap_or_else(|| panic!("alert id {id}"))
}

async fn high(p: &Pipeline, id: &str, account: &str) {
    assert_eq!(p.post(&transaction(id, account, "30000", "2026-11-20T09:00:00Z")).await, 202);
}

#[tokio::test]
async fn a_high_risk_payment_appears_live_and_acknowledging_it_persists() {
    let p = spawn_pipeline().await;
    let browser = open_dashboard(&p).await;
    assert_eq!(browser.eval(ROWS, vec![]).await, json!([]), "a fresh deployment has no alerts");

    high(&p, "browser-1", "acct-browser-1").await;
    let accepted = Instant::now();
    let id = row_of(&browser, "acct-browser-1", ON_SCREEN_WITHIN).await;
    println!("alert {id} on screen {:?} after the 202", accepted.elapsed());

    // The analyst clicks Ack in that row: the author is the token's subject.
    let ack = format!(r##"#alerts tbody tr[data-alert-id="{id}"] button[data-action="ack"]"##);
    browser.click(&ack).await;
    let status = format!(
        r##"return document.querySelector('tr[data-alert-id="{id}"] td.status').dataset.status === "acknowledged";"##
    );
    browser.wait_for(DEADLINE, "the row to show acknowledged", &status, &[]).await;

    // It is stored, with who did it.
    let stored: Value = p
        .request(reqwest::Method::GET, &format!("/alerts/{id}"), None)
        .await
        .json()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored["status"], "acknowledged", "{stored}");
    assert_eq!(stored["acknowledged_by"], "dana", "{stored}");

    // Opening the row shows the explanation of the decision.
    let row = format!(r##"#alerts tbody tr[data-alert-id="{id}"] td.reasons"##);
    browser.click(&row).await;
    let drilled = r##"const d = document.querySelector("#drilldown");
        return d.dataset.state === "loaded" && d.textContent.includes("browser-1");"##;
    browser.wait_for(DEADLINE, "the drill-down of the alert", drilled, &[]).await;

    let shot = browser.screenshot("dashboard-live-and-ack.png").await;
    println!("screenshot: {}", shot.display());
    browser.close().await;
    p.teardown().await;
}

#[tokio::test]
async fn after_an_api_restart_the_page_reconnects_and_shows_alerts_raised_meanwhile() {
    let mut p = spawn_pipeline().await;
    let browser = open_dashboard(&p).await;
    high(&p, "before-restart", "acct-restart-0").await;
    row_of(&browser, "acct-restart-0", DEADLINE).await;

    p.stop_api().await;
    connection_becomes(&browser, "reconnecting").await;

    // While the api is down, payments keep arriving through the broker (another api
    // replica, say) and the worker raises their alerts.
    for i in 1..=2 {
        p.publish_direct(&transaction(
            &format!("during-{i}"),
            &format!("acct-restart-{i}"),
            "30000",
            "2026-11-20T09:00:00Z",
        ))
        .await;
    }
    fraudsense_actors::testing::eventually(DEADLINE, "two more alerts", || async {
        let n = p.count("SELECT count(*) FROM alerts WHERE transaction_id LIKE $1", "during-%").await;
        Ok((n == 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));

    p.start_api().await;
    connection_becomes(&browser, "live").await;
    for i in 1..=2 {
        row_of(&browser, &format!("acct-restart-{i}"), DEADLINE).await;
    }
    let rows = browser.eval(ROWS, vec![]).await;
    let accounts: Vec<&str> =
        rows.as_array().into_iter().flatten().filter_map(|r| r["account"].as_str()).collect();
    assert_eq!(accounts, ["acct-restart-2", "acct-restart-1", "acct-restart-0"], "newest first, each once");

    let shot = browser.screenshot("dashboard-after-api-restart.png").await;
    println!("screenshot: {}", shot.display());
    browser.close().await;
    p.teardown().await;
}

#[tokio::test]
async fn without_a_valid_token_the_page_shows_nothing_but_the_sign_in() {
    let p = spawn_pipeline().await;
    high(&p, "hidden-1", "acct-hidden-1").await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("http://{}/dashboard", p.api)).await.unwrap_or_else(|e| panic!("{e}"));
    browser.wait_for(DEADLINE, "the sign-in box", SIGN_IN_SHOWN, &[]).await;

    // A well-formed token signed with another key: the api refuses it, the page signs out
    // and asks again, and no alert reached the page.
    let forged = fraudsense_actors::auth::sign_hs256(
        b"not-the-secret-of-this-deployment",
        &fraudsense_actors::auth::claims(&p.env.settings.auth, "mallory", &[Role::Analyst], DEADLINE),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    sign_in(&browser, &forged).await;
    let refused = r##"const m = document.querySelector("#signin-message").textContent;
        return !document.querySelector("#signin").hidden && m.includes("refused") ? m : null;"##;
    browser.wait_for(DEADLINE, "the refusal", refused, &[]).await;
    assert_eq!(browser.eval(ROWS, vec![]).await, json!([]));
    let stored = browser.eval(r##"return sessionStorage.getItem("fraudsense.token");"##, vec![]).await;
    assert_eq!(stored, Value::Null, "a refused token is forgotten");
    browser.close().await;
    p.teardown().await;
}
