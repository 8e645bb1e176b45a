//! `licensing-gateway ledger audit` against the sandbox: each finding is built for real (a
//! license made behind the ledger's back, a license deleted in Cryptlex, two licenses for one
//! request id, a record left pending, a subscription half revoked), then reported in the
//! table and the JSON; an agreeing ledger exits 0; and the audit's calls, counted in the
//! sandbox's journal, stay within its pacing. On SQLite and on PostgreSQL (where the audit
//! also books the replicas' shared window).

use std::time::Duration;

use cryptlex_sandbox::{LicenseChange, ReceivedRequest, seed};
use licensing_gateway::commands::audit::{
    self, AuditOptions, AuditReport, EXIT_CLEAN, EXIT_FINDINGS, Finding, FindingKind, PACING_WINDOW,
};
use licensing_gateway::grpc::pb::IssuedLicense;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::support::issuance::{REQUEST_ID_KEY, issue_for_demo};
use crate::support::ledger::Backend;

const CLIENT_KEY: &str = "licensing_gateway_client";

// === helpers ===

/// Issues through the gateway and returns every license of the answer.
async fn issue(
    app: &TestApp,
    request_id: &str,
    subscription: &str,
    quantity: i32,
) -> Vec<IssuedLicense> {
    let mut request = issue_for_demo(request_id);
    request.subscription_id = subscription.to_owned();
    request.quantity = quantity;
    let response = app
        .payment_client()
        .await
        .issue_license(request)
        .await
        .expect("the license is issued")
        .into_inner();
    response.licenses
}

/// The client identity the gateway wrote into a license's metadata.
fn client_of(app: &TestApp, license_id: &str) -> String {
    let license = app
        .cryptlex()
        .licenses()
        .into_iter()
        .find(|license| license.id == license_id)
        .expect("the license exists");
    license
        .metadata
        .iter()
        .find(|entry| entry.key == CLIENT_KEY)
        .expect("the client entry")
        .value
        .clone()
}

/// Calls the sandbox Cryptlex's own API with the admin PAT, as someone working behind the
/// gateway's back would.
async fn cryptlex_call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> u16 {
    let url = format!("{}{path}", app.sandbox.cryptlex.base_url());
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(app.sandbox.cryptlex.admin_pat().expose_secret());
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("the sandbox answers")
        .status()
        .as_u16()
}

/// Creates a license carrying the gateway's metadata directly in Cryptlex.
async fn create_behind_the_ledger(app: &TestApp, request_id: &str, client: &str) {
    let body = json!({
        "productId": seed::PRODUCT_ID,
        "userId": seed::DEMO_USER_ID,
        "metadata": [
            {"key": REQUEST_ID_KEY, "value": request_id, "viewPermissions": []},
            {"key": CLIENT_KEY, "value": client, "viewPermissions": []}
        ]
    });
    let status = cryptlex_call(app, reqwest::Method::POST, "/v3/licenses", Some(body)).await;
    assert_eq!(status, 201);
}

async fn delete_in_cryptlex(app: &TestApp, license_id: &str) {
    let path = format!("/v3/licenses/{license_id}");
    assert_eq!(
        cryptlex_call(app, reqwest::Method::DELETE, &path, None).await,
        204
    );
}

fn options(pending_older_than: Duration, calls_per_window: u32) -> AuditOptions {
    AuditOptions {
        json: false,
        pending_older_than,
        calls_per_window,
    }
}

async fn run_audit(app: &TestApp, options: &AuditOptions) -> AuditReport {
    audit::audit(&app.sandbox.settings, options)
        .await
        .expect("the audit finishes")
}

/// The audit's requests: every one it makes is a `GET` of `/v3/licenses...`.
fn audit_requests(app: &TestApp) -> Vec<ReceivedRequest> {
    app.cryptlex()
        .requests()
        .into_iter()
        .filter(|request| request.method == "GET" && request.path.starts_with("/v3/licenses"))
        .collect()
}

fn of_kind(report: &AuditReport, kind: FindingKind) -> Vec<&Finding> {
    report
        .findings
        .iter()
        .filter(|finding| finding.kind == kind)
        .collect()
}

// === tests ===

async fn an_agreeing_ledger_is_clean_and_exits_0(backend: Backend) {
    // Arrange: one license, and a two-unit subscription (its units are distinct request ids)
    let app = spawn_app_with(backend.options()).await;
    issue(&app, "order-clean", "", 1).await;
    issue(&app, "order-units", "sub-agree", 2).await;
    app.cryptlex().clear_requests();

    // Act
    let report = run_audit(&app, &AuditOptions::default()).await;

    // Assert
    assert_eq!(report.findings, Vec::new(), "{}", report.render(false));
    assert!(report.clean);
    assert_eq!(report.exit_code(), EXIT_CLEAN);
    assert_eq!(report.licenses_checked, 3);
    assert_eq!(
        report.records_checked, 4,
        "the request's record and its two units'"
    );
    assert_eq!(report.upstream_calls, 1, "one page, nothing to look up");
    assert_eq!(audit_requests(&app).len(), 1);
    let table = report.render(false);
    assert!(
        table.contains("clean: the ledger and cryptlex agree"),
        "{table}"
    );
    let json: Value = serde_json::from_str(&report.render(true)).expect("json");
    assert_eq!(json["clean"], true);
    assert_eq!(json["findings"], json!([]));
}

#[tokio::test]
async fn an_agreeing_ledger_is_clean_and_exits_0_on_sqlite() {
    an_agreeing_ledger_is_clean_and_exits_0(Backend::Sqlite).await;
}

#[tokio::test]
async fn an_agreeing_ledger_is_clean_and_exits_0_on_postgres() {
    an_agreeing_ledger_is_clean_and_exits_0(Backend::Postgres).await;
}

async fn every_kind_of_disagreement_is_found_and_reported(backend: Backend) {
    // Arrange: a healthy license, then one of each finding
    let app = spawn_app_with(backend.options()).await;
    let healthy = issue(&app, "order-healthy", "", 1).await;
    let client = client_of(&app, &healthy[0].id);
    // A license carrying request-id metadata that the ledger never recorded.
    create_behind_the_ledger(&app, "order-orphan", &client).await;
    // A ledger record whose license was deleted in Cryptlex.
    let deleted = issue(&app, "order-deleted", "", 1).await;
    delete_in_cryptlex(&app, &deleted[0].id).await;
    // Two licenses for one request id.
    let first = issue(&app, "order-dup", "", 1).await;
    create_behind_the_ledger(&app, "order-dup", &client).await;
    // A record left pending (an attempt that died before settling it).
    let ledger = app.ledger().await;
    ledger
        .begin(
            &client,
            "order-stuck",
            "fingerprint",
            Duration::from_secs(1),
        )
        .await
        .expect("the record is written");
    ledger.close().await;
    // A subscription with one license revoked and one not.
    let split = issue(&app, "order-split", "sub-split", 2).await;
    app.cryptlex().update_license(
        &split[1].id,
        LicenseChange {
            revoked: Some(true),
            suspended: None,
        },
    );
    app.cryptlex().clear_requests();

    // Act
    let report = run_audit(&app, &options(Duration::ZERO, 5)).await;

    // Assert: one finding of each kind, naming what it is about
    let table = report.render(false);
    assert_eq!(report.exit_code(), EXIT_FINDINGS, "{table}");
    assert!(!report.clean);
    assert_eq!(report.findings.len(), 5, "{table}");

    let orphan = of_kind(&report, FindingKind::LicenseWithoutRecord);
    assert_eq!(orphan.len(), 1, "{table}");
    assert_eq!(orphan[0].request_id.as_deref(), Some("order-orphan"));
    assert_eq!(orphan[0].client.as_deref(), Some(client.as_str()));
    let orphan_license = app
        .cryptlex()
        .licenses_with_metadata(REQUEST_ID_KEY, "order-orphan");
    assert_eq!(orphan[0].license_ids, [orphan_license[0].id.clone()]);

    let missing = of_kind(&report, FindingKind::RecordWithoutLicense);
    assert_eq!(missing.len(), 1, "{table}");
    assert_eq!(missing[0].request_id.as_deref(), Some("order-deleted"));
    assert_eq!(missing[0].license_ids, [deleted[0].id.clone()]);

    let duplicate = of_kind(&report, FindingKind::DuplicateLicenses);
    assert_eq!(duplicate.len(), 1, "{table}");
    assert_eq!(duplicate[0].request_id.as_deref(), Some("order-dup"));
    assert_eq!(duplicate[0].license_ids.len(), 2);
    assert_eq!(duplicate[0].license_ids[0], first[0].id);
    assert!(duplicate[0].detail.contains(&first[0].id), "{table}");

    let stale = of_kind(&report, FindingKind::StalePending);
    assert_eq!(stale.len(), 1, "only the one pending record: {table}");
    assert_eq!(stale[0].request_id.as_deref(), Some("order-stuck"));
    assert!(
        stale[0].detail.starts_with("IssueLicense pending for"),
        "{table}"
    );

    let split_finding = of_kind(&report, FindingKind::SubscriptionDisagrees);
    assert_eq!(split_finding.len(), 1, "{table}");
    assert_eq!(
        split_finding[0].subscription_id.as_deref(),
        Some("sub-split")
    );
    assert_eq!(
        split_finding[0].license_ids,
        [split[0].id.clone(), split[1].id.clone()]
    );
    assert_eq!(
        split_finding[0].detail,
        format!("revoked: {}; not revoked: {}", split[1].id, split[0].id)
    );
    assert!(
        !table.contains("order-split#"),
        "the units of one request are not duplicates: {table}"
    );

    // The table: a header, one line per finding, the count.
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ledger audit: 6 license(s)"),
        "{table}"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["FINDING", "CLIENT", "REQUEST", "ID", "LICENSES", "DETAIL"]
    );
    for (line, kind) in lines[2..7].iter().zip([
        "license_without_record",
        "record_without_license",
        "duplicate_licenses",
        "stale_pending",
        "subscription_disagrees",
    ]) {
        assert!(line.starts_with(kind), "{line}");
    }
    assert!(lines[6].contains("subscription sub-split"), "{table}");
    assert_eq!(lines[7], "5 finding(s)");

    // The JSON: the same findings.
    let json: Value = serde_json::from_str(&report.render(true)).expect("json");
    assert_eq!(json["clean"], false);
    assert_eq!(json["ledger_backend"], report.ledger_backend);
    let kinds: Vec<&str> = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|finding| finding["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "license_without_record",
            "record_without_license",
            "duplicate_licenses",
            "stale_pending",
            "subscription_disagrees"
        ]
    );
    assert_eq!(json["findings"][1]["license_ids"], json!([deleted[0].id]));
    assert_eq!(json["findings"][4]["request_id"], Value::Null);

    // Read-only and paced: one page and one look-up of the deleted license, nothing else.
    let requests = app.cryptlex().requests();
    assert!(
        requests.iter().all(|request| request.method == "GET"),
        "{requests:?}"
    );
    assert_eq!(audit_requests(&app).len(), 2, "{requests:?}");
    assert_eq!(report.upstream_calls, 2);
}

#[tokio::test]
async fn every_kind_of_disagreement_is_found_and_reported_on_sqlite() {
    every_kind_of_disagreement_is_found_and_reported(Backend::Sqlite).await;
}

#[tokio::test]
async fn every_kind_of_disagreement_is_found_and_reported_on_postgres() {
    every_kind_of_disagreement_is_found_and_reported(Backend::Postgres).await;
}

#[tokio::test]
async fn the_audit_never_starts_more_calls_per_window_than_its_budget() {
    // Arrange: three deleted licenses, so the audit makes four calls (a page, three look-ups)
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    for request_id in ["order-gone-1", "order-gone-2", "order-gone-3"] {
        let issued = issue(&app, request_id, "", 1).await;
        delete_in_cryptlex(&app, &issued[0].id).await;
    }
    app.cryptlex().clear_requests();

    // Act: two calls per window
    let report = run_audit(&app, &options(Duration::from_secs(600), 2)).await;

    // Assert: four calls, never three within one window
    assert_eq!(of_kind(&report, FindingKind::RecordWithoutLicense).len(), 3);
    let starts: Vec<_> = audit_requests(&app)
        .iter()
        .map(|request| request.received_at)
        .collect();
    assert_eq!(starts.len(), 4);
    assert_eq!(report.upstream_calls, 4);
    let window = chrono::TimeDelta::from_std(PACING_WINDOW).expect("window");
    for pair in starts.windows(3) {
        assert!(
            pair[2] - pair[0] >= window - chrono::TimeDelta::milliseconds(50),
            "three calls within one window: {starts:?}"
        );
    }
}

#[tokio::test]
async fn the_audit_without_a_pat_is_an_error_not_a_clean_report() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut settings = app.sandbox.settings.clone();
    settings.cryptlex.admin_token = None;

    let error = audit::audit(&settings, &AuditOptions::default())
        .await
        .expect_err("no pat, no audit");

    assert!(format!("{error:#}").contains("cryptlex pat"), "{error:#}");
}
