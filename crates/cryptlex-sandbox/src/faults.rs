//! Fault injection: rules that make the sandbox slow, wrong or rude on purpose.
//!
//! A [`FaultRule`] matches requests by method and path prefix and applies its [`FaultAction`]
//! to the next `times` of them (or to all of them). Rules are checked in the order they were
//! added and the first live match wins, so a test can stack "fail twice, then be slow". Rules
//! only see requests that got past the rate limiter, because that is where Cryptlex's own limiter
//! sits: in front of everything. This module holds and matches rules; the pipeline carries out
//! the actions.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};

/// What a matching request suffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Waits, then answers normally (the handler runs after the delay).
    Delay(Duration),
    /// Answers with exactly this instead of running the handler. No rate-limit headers are
    /// added: the response stands for whatever sits in front of Cryptlex (a proxy, a balancer).
    /// `Content-Length` and `Transfer-Encoding` in `headers` are ignored; use
    /// [`FaultAction::TruncateBody`] for a lying length.
    Respond {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// Aborts the TCP connection with a reset before the handler runs: nothing is sent and
    /// nothing changes. On HTTP/2 the whole connection goes, with every stream on it.
    ResetBeforeResponse,
    /// Runs the handler for real (a license really gets created), then aborts the connection
    /// with a reset instead of answering: "the upstream did the work, the reply was lost".
    ResetAfterProcessing,
    /// Runs the handler, then sends its status and headers with the full `Content-Length` but
    /// only the first half of the body (at least one byte short), and closes the connection.
    TruncateBody,
    /// Runs the handler for real, then waits this long before answering: "the upstream did the
    /// work, the reply is late". Lets a test act (kill the client, time it out) while the work
    /// is already done and the reply not yet seen.
    DelayAfterProcessing(Duration),
    /// Runs the handler for real, then throws its answer away and sends this one instead:
    /// "the upstream did the work, a proxy in front of it answered 502". Built with
    /// [`FaultAction::after_processing`] from a `Respond` action; the same fields.
    RespondAfterProcessing {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
}

impl FaultAction {
    /// Returns a `Respond` action with a JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        FaultAction::Respond {
            status,
            content_type: Some("application/json; charset=utf-8".to_owned()),
            body: body.to_string().into_bytes(),
            headers: Vec::new(),
        }
    }

    /// Returns a `Respond` action with an arbitrary body and content type.
    pub fn body(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        FaultAction::Respond {
            status,
            content_type: Some(content_type.to_owned()),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// Returns a `Respond` action with an empty body and no content type.
    pub fn empty(status: u16) -> Self {
        FaultAction::Respond {
            status,
            content_type: None,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to a `Respond` (or `RespondAfterProcessing`) action; other actions are
    /// returned unchanged.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let FaultAction::Respond { headers, .. }
        | FaultAction::RespondAfterProcessing { headers, .. } = &mut self
        {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    /// Turns a `Respond` action into a `RespondAfterProcessing` one, so the canned answer
    /// replaces the real one after the work is done; other actions are returned unchanged.
    #[must_use]
    pub fn after_processing(self) -> Self {
        match self {
            FaultAction::Respond {
                status,
                content_type,
                body,
                headers,
            } => FaultAction::RespondAfterProcessing {
                status,
                content_type,
                body,
                headers,
            },
            other => other,
        }
    }

    /// Returns the action's name, as recorded in [`ReceivedRequest::fault`].
    ///
    /// [`ReceivedRequest::fault`]: crate::journal::ReceivedRequest
    pub fn kind(&self) -> FaultKind {
        match self {
            FaultAction::Delay(_) => FaultKind::Delay,
            FaultAction::Respond { .. } => FaultKind::Respond,
            FaultAction::ResetBeforeResponse => FaultKind::ResetBeforeResponse,
            FaultAction::ResetAfterProcessing => FaultKind::ResetAfterProcessing,
            FaultAction::TruncateBody => FaultKind::TruncateBody,
            FaultAction::DelayAfterProcessing(_) => FaultKind::DelayAfterProcessing,
            FaultAction::RespondAfterProcessing { .. } => FaultKind::RespondAfterProcessing,
        }
    }
}

/// The name of a fault action, without its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    Delay,
    Respond,
    ResetBeforeResponse,
    ResetAfterProcessing,
    TruncateBody,
    DelayAfterProcessing,
    RespondAfterProcessing,
}

/// A fault and the requests it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    /// Only requests with this method; `None` matches any.
    pub method: Option<Method>,
    /// Only requests whose path starts with this (`/v3/licenses` also matches
    /// `/v3/licenses/{id}`); `None` matches any path.
    pub path_prefix: Option<String>,
    /// How many matching requests the rule still applies to; `None` means forever.
    pub times: Option<u32>,
    pub action: FaultAction,
}

impl FaultRule {
    /// Returns a rule that applies to the next matching request only.
    pub fn once(action: FaultAction) -> Self {
        Self::n_times(1, action)
    }

    /// Returns a rule that applies to the next `times` matching requests.
    pub fn n_times(times: u32, action: FaultAction) -> Self {
        FaultRule {
            method: None,
            path_prefix: None,
            times: Some(times),
            action,
        }
    }

    /// Returns a rule that applies to every matching request until removed.
    pub fn always(action: FaultAction) -> Self {
        FaultRule {
            method: None,
            path_prefix: None,
            times: None,
            action,
        }
    }

    /// Restricts the rule to one method.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Restricts the rule to paths starting with `prefix`.
    #[must_use]
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|wanted| wanted == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
    }
}

/// Identifies an added rule, for [`Controls::remove_fault`].
///
/// [`Controls::remove_fault`]: crate::controls::Controls::remove_fault
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultId(pub u64);

/// Why a rule was refused when added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidFaultRule {
    #[error("method {0:?} is not a valid http method")]
    Method(String),
    #[error("status {0} is not a valid http status code")]
    Status(u16),
    #[error("header {0:?} is not a valid http header")]
    Header(String),
    #[error("content type {0:?} is not a valid header value")]
    ContentType(String),
    #[error("a rule that applies zero times would never apply")]
    ZeroTimes,
    #[error("body_base64 is not valid base64")]
    BodyBase64,
    #[error("give either body or body_base64, not both")]
    TwoBodies,
}

/// A fault picked for one request, with its `Respond` parts already parsed.
#[derive(Debug)]
pub(crate) enum PlannedFault {
    Delay(Duration),
    Respond(CannedResponse),
    ResetBeforeResponse,
    ResetAfterProcessing,
    TruncateBody,
    DelayAfterProcessing(Duration),
    RespondAfterProcessing(CannedResponse),
}

/// A validated `Respond` action, ready to become a response.
#[derive(Clone, Debug)]
pub(crate) struct CannedResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

#[derive(Debug)]
struct ActiveRule {
    id: FaultId,
    rule: FaultRule,
    /// Parsed once when added, so a bad header fails `add_fault`, not some later request.
    canned: Option<CannedResponse>,
}

/// The live rules, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    rules: Vec<ActiveRule>,
    next_id: u64,
}

impl FaultTable {
    pub(crate) fn add(&mut self, rule: FaultRule) -> Result<FaultId, InvalidFaultRule> {
        if rule.times == Some(0) {
            return Err(InvalidFaultRule::ZeroTimes);
        }
        let canned = match &rule.action {
            FaultAction::Respond {
                status,
                content_type,
                body,
                headers,
            }
            | FaultAction::RespondAfterProcessing {
                status,
                content_type,
                body,
                headers,
            } => Some(canned_response(
                *status,
                content_type.as_deref(),
                body,
                headers,
            )?),
            _ => None,
        };
        self.next_id += 1;
        let id = FaultId(self.next_id);
        self.rules.push(ActiveRule { id, rule, canned });
        Ok(id)
    }

    pub(crate) fn remove(&mut self, id: FaultId) -> bool {
        let before = self.rules.len();
        self.rules.retain(|active| active.id != id);
        self.rules.len() != before
    }

    pub(crate) fn clear(&mut self) {
        self.rules.clear();
    }

    /// Returns the fault for this request, if any, and uses up one of the rule's applications.
    pub(crate) fn take(
        &mut self,
        method: &Method,
        path: &str,
    ) -> Option<(FaultKind, PlannedFault)> {
        let index = self
            .rules
            .iter()
            .position(|active| active.rule.matches(method, path))?;
        let active = &mut self.rules[index];
        let planned = match &active.rule.action {
            FaultAction::Delay(delay) => PlannedFault::Delay(*delay),
            FaultAction::Respond { .. } => PlannedFault::Respond(
                active
                    .canned
                    .clone()
                    .expect("respond rules are parsed when added"),
            ),
            FaultAction::ResetBeforeResponse => PlannedFault::ResetBeforeResponse,
            FaultAction::ResetAfterProcessing => PlannedFault::ResetAfterProcessing,
            FaultAction::TruncateBody => PlannedFault::TruncateBody,
            FaultAction::DelayAfterProcessing(delay) => PlannedFault::DelayAfterProcessing(*delay),
            FaultAction::RespondAfterProcessing { .. } => PlannedFault::RespondAfterProcessing(
                active
                    .canned
                    .clone()
                    .expect("respond rules are parsed when added"),
            ),
        };
        let kind = active.rule.action.kind();
        if let Some(times) = &mut active.rule.times {
            *times -= 1;
            if *times == 0 {
                self.rules.remove(index);
            }
        }
        Some((kind, planned))
    }
}

fn canned_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    headers: &[(String, String)],
) -> Result<CannedResponse, InvalidFaultRule> {
    let status = StatusCode::from_u16(status).map_err(|_| InvalidFaultRule::Status(status))?;
    let mut header_map = HeaderMap::new();
    if let Some(content_type) = content_type {
        let value = HeaderValue::from_str(content_type)
            .map_err(|_| InvalidFaultRule::ContentType(content_type.to_owned()))?;
        header_map.insert(CONTENT_TYPE, value);
    }
    for (name, value) in headers {
        let invalid = || InvalidFaultRule::Header(name.clone());
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        // hyper computes the length from the body; a second, different one would be a
        // protocol error on our side rather than the fault the test asked for.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        header_map.append(name, value);
    }
    Ok(CannedResponse {
        status,
        headers: header_map,
        body: body.to_vec(),
    })
}

/// The JSON form of a [`FaultRule`] for `POST /__sandbox/faults`.
///
/// ```json
/// {"method": "POST", "pathPrefix": "/v3/licenses", "times": 1,
///  "action": {"kind": "respond", "status": 503, "contentType": "text/html",
///             "body": "<h1>down</h1>", "headers": {"Retry-After": "2"}}}
/// ```
/// `times` absent or `null` means forever. Other actions: `{"kind": "delay", "millis": 1500}`,
/// `{"kind": "resetBeforeResponse"}`, `{"kind": "resetAfterProcessing"}`,
/// `{"kind": "truncateBody"}`, `{"kind": "delayAfterProcessing", "millis": 3000}`, and
/// `{"kind": "respondAfterProcessing", ...}` with the fields of `respond`. A `respond` body is
/// either UTF-8 `body` or raw `bodyBase64`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultRuleJson {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    times: Option<u32>,
    action: FaultActionJson,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
enum FaultActionJson {
    Delay { millis: u64 },
    Respond(RespondJson),
    ResetBeforeResponse,
    ResetAfterProcessing,
    TruncateBody,
    DelayAfterProcessing { millis: u64 },
    RespondAfterProcessing(RespondJson),
}

/// The fields of a `respond` or `respondAfterProcessing` action.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RespondJson {
    status: u16,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    /// A JSON object keeps the common case short; a list of pairs allows repeats.
    #[serde(default)]
    headers: HeadersJson,
}

impl TryFrom<RespondJson> for FaultAction {
    type Error = InvalidFaultRule;

    /// Returns the `Respond` action; `after_processing` makes the other kind.
    fn try_from(json: RespondJson) -> Result<Self, Self::Error> {
        let body = match (json.body, json.body_base64) {
            (Some(_), Some(_)) => return Err(InvalidFaultRule::TwoBodies),
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => STANDARD
                .decode(encoded)
                .map_err(|_| InvalidFaultRule::BodyBase64)?,
            (None, None) => Vec::new(),
        };
        let headers = match json.headers {
            HeadersJson::None => Vec::new(),
            HeadersJson::Map(map) => map.into_iter().collect(),
            HeadersJson::Pairs(pairs) => pairs,
        };
        Ok(FaultAction::Respond {
            status: json.status,
            content_type: json.content_type,
            body,
            headers,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum HeadersJson {
    #[default]
    None,
    Map(std::collections::BTreeMap<String, String>),
    Pairs(Vec<(String, String)>),
}

impl TryFrom<FaultRuleJson> for FaultRule {
    type Error = InvalidFaultRule;

    fn try_from(json: FaultRuleJson) -> Result<Self, Self::Error> {
        let method = match json.method {
            Some(method) => Some(
                Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|_| InvalidFaultRule::Method(method.clone()))?,
            ),
            None => None,
        };
        let action = match json.action {
            FaultActionJson::Delay { millis } => FaultAction::Delay(Duration::from_millis(millis)),
            FaultActionJson::Respond(respond) => FaultAction::try_from(respond)?,
            FaultActionJson::ResetBeforeResponse => FaultAction::ResetBeforeResponse,
            FaultActionJson::ResetAfterProcessing => FaultAction::ResetAfterProcessing,
            FaultActionJson::TruncateBody => FaultAction::TruncateBody,
            FaultActionJson::DelayAfterProcessing { millis } => {
                FaultAction::DelayAfterProcessing(Duration::from_millis(millis))
            }
            FaultActionJson::RespondAfterProcessing(respond) => {
                FaultAction::try_from(respond)?.after_processing()
            }
        };
        Ok(FaultRule {
            method,
            path_prefix: json.path_prefix,
            times: json.times,
            action,
        })
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn a_rule_applies_its_number_of_times_then_disappears() {
        let mut table = FaultTable::default();
        table
            .add(FaultRule::n_times(2, FaultAction::ResetBeforeResponse).method(Method::POST))
            .unwrap();

        assert!(table.take(&Method::GET, "/v3/licenses").is_none());
        assert!(table.take(&Method::POST, "/v3/licenses").is_some());
        assert!(table.take(&Method::POST, "/v3/users").is_some());
        assert!(table.take(&Method::POST, "/v3/licenses").is_none());
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let mut table = FaultTable::default();
        table
            .add(FaultRule::once(FaultAction::empty(503)).path_prefix("/v3/licenses"))
            .unwrap();
        table
            .add(FaultRule::always(FaultAction::TruncateBody))
            .unwrap();

        let (first, _) = table.take(&Method::GET, "/v3/licenses/1").unwrap();
        let (second, _) = table.take(&Method::GET, "/v3/licenses/1").unwrap();
        assert_eq!(
            (first, second),
            (FaultKind::Respond, FaultKind::TruncateBody)
        );
    }

    #[test]
    fn invalid_respond_rules_are_refused_when_added() {
        let mut table = FaultTable::default();
        assert_eq!(
            table.add(FaultRule::once(FaultAction::empty(42))),
            Err(InvalidFaultRule::Status(42))
        );
        assert_eq!(
            table.add(FaultRule::once(
                FaultAction::empty(503).with_header("bad header", "x")
            )),
            Err(InvalidFaultRule::Header("bad header".to_owned()))
        );
    }

    #[test]
    fn the_json_form_of_delay_after_processing_parses_into_a_rule() {
        let json = serde_json::json!({
            "method": "POST",
            "pathPrefix": "/v3/licenses",
            "action": {"kind": "delayAfterProcessing", "millis": 1500}
        });
        let parsed: FaultRuleJson = serde_json::from_value(json).unwrap();
        let rule = FaultRule::try_from(parsed).unwrap();
        assert_eq!(
            rule,
            FaultRule::always(FaultAction::DelayAfterProcessing(Duration::from_millis(
                1500
            )))
            .method(Method::POST)
            .path_prefix("/v3/licenses")
        );
        assert_eq!(rule.action.kind(), FaultKind::DelayAfterProcessing);
    }

    #[test]
    fn the_json_form_of_respond_after_processing_parses_into_a_rule() {
        let json = serde_json::json!({
            "method": "PATCH",
            "pathPrefix": "/v3/licenses",
            "times": 1,
            "action": {"kind": "respondAfterProcessing", "status": 502,
                       "contentType": "text/plain", "body": "bad gateway"}
        });
        let parsed: FaultRuleJson = serde_json::from_value(json).unwrap();
        let rule = FaultRule::try_from(parsed).unwrap();
        assert_eq!(
            rule,
            FaultRule::once(FaultAction::body(502, "text/plain", "bad gateway").after_processing())
                .method(Method::PATCH)
                .path_prefix("/v3/licenses")
        );
    }

    #[test]
    fn the_json_form_parses_into_a_rule() {
        let json = serde_json::json!({
            "method": "post",
            "pathPrefix": "/v3/licenses",
            "times": 2,
            "action": {"kind": "respond", "status": 429, "headers": {"Retry-After": "3"}}
        });
        let parsed: FaultRuleJson = serde_json::from_value(json).unwrap();
        let rule = FaultRule::try_from(parsed).unwrap();
        assert_eq!(
            rule,
            FaultRule::n_times(2, FaultAction::empty(429).with_header("Retry-After", "3"))
                .method(Method::POST)
                .path_prefix("/v3/licenses")
        );
    }
}
