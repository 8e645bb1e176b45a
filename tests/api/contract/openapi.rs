//! A validator for the part of OpenAPI 3.0 that `contract/cryptlex-openapi-subset.json` uses,
//! and the checks of recorded exchanges against it.
//!
//! Written here rather than taken from crates.io: JSON-schema crates validate JSON Schema,
//! not OpenAPI 3.0 (`nullable`, `readOnly`/`writeOnly` per direction, `deepObject` query
//! parameters, `$ref` inside `components` with sibling keywords ignored), so a crate would
//! need a translation layer of about the size of this file, and the maintained one
//! (`jsonschema`) brings a regex engine, an HTTP resolver on by default and a dozen crates
//! for features S1 does not use. This covers exactly what S1 uses: `type`, `nullable`,
//! `required`, `properties`, `additionalProperties`, `enum`, `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `minimum`/`maximum`, `format` (`date-time`, `email`, `int32`),
//! `items`, `$ref` and `allOf`. `pattern` is not checked (S1 uses it for `sort` and aliases,
//! which neither side sends unchecked).
//!
//! One rule goes beyond the letter of OpenAPI, because S1 needs it: a name listed in
//! `required` that `properties` does not declare (S1's generator leaves a few, such as
//! `ProductDto.licensePolicy`) is neither demanded nor refused, since no answer could carry
//! it and satisfy `additionalProperties: false` at once.

use std::path::PathBuf;

use chrono::DateTime;
use cryptlex_sandbox::{AuthKind, FaultKind, ReceivedRequest};
use serde_json::Value;

/// Which way a body travels: `readOnly` properties never go to the server, `writeOnly` ones
/// never come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// The project's OpenAPI subset of Cryptlex's API.
#[derive(Debug)]
pub struct Contract {
    document: Value,
}

/// One operation of the contract, found by method and concrete path.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    spec: &'a Value,
}

impl Contract {
    /// Where the contract file is kept.
    pub fn path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contract/cryptlex-openapi-subset.json")
    }

    /// Loads `contract/cryptlex-openapi-subset.json`.
    pub fn load() -> Contract {
        let path = Self::path();
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        Contract {
            document: serde_json::from_str(&text).expect("the contract file is JSON"),
        }
    }

    /// The contract loaded once per test process.
    pub fn shared() -> &'static Contract {
        static CONTRACT: std::sync::OnceLock<Contract> = std::sync::OnceLock::new();
        CONTRACT.get_or_init(Contract::load)
    }

    /// Every operation, as `METHOD /template`.
    pub fn operations(&self) -> Vec<String> {
        let mut operations = Vec::new();
        for (template, methods) in self.document["paths"].as_object().expect("paths") {
            for method in methods.as_object().expect("methods").keys() {
                operations.push(format!("{} {template}", method.to_uppercase()));
            }
        }
        operations.sort();
        operations
    }

    /// Finds the operation for `method` on the concrete `path`; literal segments win over
    /// `{parameters}`, as in the server's router.
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        let method = method.to_lowercase();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        let mut best: Option<(usize, Operation<'_>)> = None;
        for (template, methods) in self.document["paths"].as_object()? {
            let Some(spec) = methods.get(&method) else {
                continue;
            };
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let matches = parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') {
                    !segment.is_empty()
                } else {
                    literal += 1;
                    part == segment
                }
            });
            if matches && best.as_ref().is_none_or(|(score, _)| literal > *score) {
                best = Some((literal, Operation { spec }));
            }
        }
        best.map(|(_, operation)| operation)
    }

    /// The schema of a component, as a `$ref` the validator resolves.
    pub fn component(name: &str) -> Value {
        serde_json::json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// The scopes the operation's security requires; `None` when it needs no token at all.
    pub fn scopes(&self, operation: Operation<'_>) -> Option<Vec<String>> {
        let requirements = operation.spec["security"].as_array()?;
        let jwt = requirements
            .iter()
            .find_map(|requirement| requirement.get("JWT"))?;
        Some(
            jwt.as_array()
                .map(|scopes| {
                    scopes
                        .iter()
                        .filter_map(|scope| scope.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// The JSON schema of the response with `status`, `None` when the status is declared
    /// without a body; an error when the status is not declared.
    pub fn response_schema<'a>(
        &self,
        operation: Operation<'a>,
        status: u16,
    ) -> Result<Option<&'a Value>, String> {
        let responses = &operation.spec["responses"];
        let response = responses
            .get(status.to_string())
            .or_else(|| responses.get(format!("{}XX", status / 100)))
            .or_else(|| responses.get("default"))
            .ok_or_else(|| format!("status {status} is not declared"))?;
        Ok(response
            .pointer("/content/application~1json/schema")
            .or_else(|| {
                response["content"]
                    .as_object()
                    .and_then(|content| content.values().next())
                    .and_then(|media| media.get("schema"))
            }))
    }

    /// Checks what a client sent against the operation it names.
    pub fn check_request(&self, request: &ReceivedRequest) -> Vec<String> {
        let Some(operation) = self.operation(&request.method, &request.path) else {
            return vec![format!(
                "{} {} is not an operation of the contract",
                request.method, request.path
            )];
        };
        let mut errors = Vec::new();
        self.check_query(operation, request.query.as_deref(), &mut errors);
        match operation
            .spec
            .pointer("/requestBody/content/application~1json/schema")
        {
            Some(_) if request.body.is_empty() => {
                let required = operation.spec["requestBody"]["required"] == Value::Bool(true);
                errors.extend(required.then(|| "the request body is required".to_owned()));
            }
            Some(schema) => match serde_json::from_slice::<Value>(&request.body) {
                Ok(body) => errors.extend(self.walk(&body, schema, Direction::Request, "$")),
                Err(error) => errors.push(format!("the request body is not JSON: {error}")),
            },
            None if !request.body.is_empty() => {
                errors.push("a body was sent to an operation that takes none".to_owned());
            }
            None => {}
        }
        if request.auth == AuthKind::None
            && self.scopes(operation).is_some()
            && request.status.is_some_and(|status| status < 300)
        {
            errors.push("succeeded without the token its security requires".to_owned());
        }
        prefixed(request, errors)
    }

    /// Checks what the sandbox answered. Canned answers (`Respond` faults) and answers never
    /// produced (a reset before the handler) are not the sandbox's and are skipped.
    pub fn check_response(&self, request: &ReceivedRequest) -> Vec<String> {
        let (Some(status), Some(operation)) = (
            request.status,
            self.operation(&request.method, &request.path),
        ) else {
            return Vec::new();
        };
        if matches!(
            request.fault,
            Some(
                FaultKind::Respond
                    | FaultKind::RespondAfterProcessing
                    | FaultKind::ResetBeforeResponse
            )
        ) {
            return Vec::new();
        }
        let mut errors = Vec::new();
        match self.response_schema(operation, status) {
            Err(error) => errors.push(error),
            Ok(Some(schema)) => match serde_json::from_slice::<Value>(&request.response_body) {
                Ok(body) => errors.extend(self.walk(&body, schema, Direction::Response, "$")),
                Err(error) => errors.push(format!("the {status} answer is not JSON: {error}")),
            },
            Ok(None) if !request.response_body.is_empty() => {
                errors.push(format!("status {status} is declared without a body"));
            }
            Ok(None) => {}
        }
        prefixed(request, errors)
            .into_iter()
            .map(|error| format!("answer: {error}"))
            .collect()
    }

    /// Validates `value` against `schema` (usually [`Contract::component`]).
    pub fn validate(&self, value: &Value, schema: &Value, direction: Direction) -> Vec<String> {
        self.walk(value, schema, direction, "$")
    }

    fn check_query(&self, operation: Operation<'_>, query: Option<&str>, errors: &mut Vec<String>) {
        let declared: Vec<&Value> = operation.spec["parameters"]
            .as_array()
            .map(|parameters| {
                parameters
                    .iter()
                    .filter(|parameter| parameter["in"] == "query")
                    .collect()
            })
            .unwrap_or_default();
        let find = |name: &str| declared.iter().find(|parameter| parameter["name"] == name);
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            // `name[op]`: a deepObject parameter and one of its operators.
            let (base, operator) = match name.strip_suffix(']').and_then(|n| n.split_once('[')) {
                Some((base, operator)) => (base, Some(operator)),
                None => (name.as_ref(), None),
            };
            let Some(parameter) = find(base) else {
                errors.push(format!("query parameter {name} is not declared"));
                continue;
            };
            let schema = &parameter["schema"];
            // S1 declares some filters as objects without `style: deepObject`; an object
            // can only travel as `name[key]` either way.
            let is_object = schema["type"] == "object";
            let scalar = match (operator, is_object) {
                (Some(operator), true) => match schema["properties"].get(operator) {
                    Some(schema) => schema,
                    None => {
                        errors.push(format!("{base} has no operator {operator}"));
                        continue;
                    }
                },
                (None, true) => {
                    errors.push(format!("{base} needs an operator, as {base}[eq]="));
                    continue;
                }
                (Some(_), false) => {
                    errors.push(format!("{base} is a plain parameter, not {name}"));
                    continue;
                }
                (None, false) => schema,
            };
            if let Err(error) = self.check_scalar(&value, scalar) {
                errors.push(format!("query parameter {name}: {error}"));
            }
        }
    }

    /// Checks a query value, which is text whatever the parameter's type.
    fn check_scalar(&self, text: &str, schema: &Value) -> Result<(), String> {
        let value = match schema["type"].as_str() {
            Some("integer") => Value::from(
                text.parse::<i64>()
                    .map_err(|_| format!("{text:?} is not an integer"))?,
            ),
            Some("boolean") => Value::from(
                text.parse::<bool>()
                    .map_err(|_| format!("{text:?} is not true or false"))?,
            ),
            _ => Value::from(text),
        };
        let errors = self.walk(&value, schema, Direction::Request, "");
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }

    fn resolve<'a>(&'a self, reference: &str) -> Option<&'a Value> {
        self.document.pointer(reference.strip_prefix('#')?)
    }

    /// Validates `value` against `schema`, naming places from `at`.
    fn walk(&self, value: &Value, schema: &Value, direction: Direction, at: &str) -> Vec<String> {
        let mut walk = Walk {
            contract: self,
            direction,
            errors: Vec::new(),
        };
        walk.value(value, schema, at);
        walk.errors
    }
}

/// One validation pass: the contract (for `$ref`), the direction, and what was found.
struct Walk<'a> {
    contract: &'a Contract,
    direction: Direction,
    errors: Vec<String>,
}

impl Walk<'_> {
    fn value(&mut self, value: &Value, schema: &Value, at: &str) {
        // OpenAPI 3.0: a Reference Object's siblings are ignored.
        if let Some(reference) = schema["$ref"].as_str() {
            match self.contract.resolve(reference) {
                Some(target) => self.value(value, target, at),
                None => self.errors.push(format!("{at}: unresolvable {reference}")),
            }
            return;
        }
        if value.is_null() {
            // `nullable` admits null; a schema without `type` constrains nothing.
            let typed = schema.get("type").is_some() || schema.get("allOf").is_some();
            if schema["nullable"] != Value::Bool(true) && typed {
                self.errors
                    .push(format!("{at}: null where the schema is not nullable"));
            }
            return;
        }
        for part in schema["allOf"].as_array().into_iter().flatten() {
            self.value(value, part, at);
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            self.errors
                .push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        match (schema["type"].as_str(), value) {
            (None, _) | (Some("number"), Value::Number(_)) | (Some("boolean"), Value::Bool(_)) => {}
            (Some("object"), Value::Object(object)) => self.object(object, schema, at),
            (Some("array"), Value::Array(items)) => self.array(items, schema, at),
            (Some("string"), Value::String(text)) => self.string(text, schema, at),
            (Some("integer"), Value::Number(number)) if number.is_i64() || number.is_u64() => {
                self.integer(number, schema, at);
            }
            (Some(expected), _) => self.errors.push(format!(
                "{at}: {} where the schema wants {expected}",
                kind(value)
            )),
        }
    }

    fn object(&mut self, object: &serde_json::Map<String, Value>, schema: &Value, at: &str) {
        let empty = serde_json::Map::new();
        let properties = schema["properties"].as_object().unwrap_or(&empty);
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for name in &required {
            if properties.contains_key(*name) && !object.contains_key(*name) {
                self.errors
                    .push(format!("{at}: required property {name} is missing"));
            }
        }
        let forbidden = match self.direction {
            Direction::Request => "readOnly",
            Direction::Response => "writeOnly",
        };
        for (name, member) in object {
            let here = format!("{at}.{name}");
            match properties.get(name) {
                Some(property) => {
                    if property[forbidden] == Value::Bool(true) {
                        self.errors
                            .push(format!("{here}: {forbidden} properties must not be sent"));
                    }
                    self.value(member, property, &here);
                }
                // Undeclared but required by S1 (see the module docs): accepted as is.
                None if required.contains(&name.as_str()) => {}
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => self
                        .errors
                        .push(format!("{here}: property not in the schema")),
                    extra @ Value::Object(_) => self.value(member, extra, &here),
                    _ => {}
                },
            }
        }
    }

    fn array(&mut self, items: &[Value], schema: &Value, at: &str) {
        let count = items.len() as u64;
        if schema["maxItems"].as_u64().is_some_and(|max| count > max) {
            self.errors
                .push(format!("{at}: {count} items, more than maxItems"));
        }
        if schema["minItems"].as_u64().is_some_and(|min| count < min) {
            self.errors
                .push(format!("{at}: {count} items, fewer than minItems"));
        }
        if let Some(item_schema) = schema.get("items") {
            for (index, item) in items.iter().enumerate() {
                self.value(item, item_schema, &format!("{at}[{index}]"));
            }
        }
    }

    fn string(&mut self, text: &str, schema: &Value, at: &str) {
        // .NET counts UTF-16 code units; the two agree on everything these APIs carry.
        let length = text.encode_utf16().count() as u64;
        if let Some(max) = schema["maxLength"].as_u64()
            && length > max
        {
            self.errors
                .push(format!("{at}: {length} characters, at most {max} allowed"));
        }
        if let Some(min) = schema["minLength"].as_u64()
            && length < min
        {
            self.errors
                .push(format!("{at}: {length} characters, at least {min} needed"));
        }
        match schema["format"].as_str() {
            Some("date-time") if DateTime::parse_from_rfc3339(text).is_err() => self
                .errors
                .push(format!("{at}: {text:?} is not an RFC 3339 date-time")),
            Some("email") if !text.contains('@') => self
                .errors
                .push(format!("{at}: {text:?} is not an email address")),
            _ => {}
        }
    }

    fn integer(&mut self, number: &serde_json::Number, schema: &Value, at: &str) {
        let Some(number) = number
            .as_i64()
            .map(i128::from)
            .or(number.as_u64().map(i128::from))
        else {
            return;
        };
        if schema["format"] == "int32" && i32::try_from(number).is_err() {
            self.errors
                .push(format!("{at}: {number} does not fit int32"));
        }
        // S1 writes int64 bounds as floats (9223372036854776000), so compare as floats.
        if schema["maximum"]
            .as_f64()
            .is_some_and(|max| number as f64 > max)
        {
            self.errors.push(format!("{at}: {number} is above maximum"));
        }
        if schema["minimum"]
            .as_f64()
            .is_some_and(|min| (number as f64) < min)
        {
            self.errors.push(format!("{at}: {number} is below minimum"));
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn prefixed(request: &ReceivedRequest, errors: Vec<String>) -> Vec<String> {
    errors
        .into_iter()
        .map(|error| {
            format!(
                "#{} {} {} -> {}: {error}",
                request.sequence,
                request.method,
                request.path,
                request
                    .status
                    .map_or_else(|| "no answer".to_owned(), |status| status.to_string())
            )
        })
        .collect()
}

// === S1-valid answers the sandbox never gives ===

/// How [`Contract::example`] fills what S1 leaves optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Required properties only; every list empty.
    Minimal,
    /// Every property, and every nullable one (optional references included) `null`.
    Nulls,
}

impl Contract {
    /// Builds a value that satisfies `schema` in the shape `variant` asks for, as a server
    /// following S1 to the letter, but not the sandbox, might answer.
    pub fn example(&self, schema: &Value, variant: Variant) -> Value {
        self.example_at(schema, variant, 0)
    }

    fn example_at(&self, schema: &Value, variant: Variant, depth: usize) -> Value {
        if let Some(reference) = schema["$ref"].as_str() {
            let target = self.resolve(reference).expect("references resolve");
            return self.example_at(target, variant, depth);
        }
        if let Some(first) = schema["allOf"].as_array().and_then(|parts| parts.first()) {
            return self.example_at(first, variant, depth);
        }
        if let Some(first) = schema["enum"].as_array().and_then(|values| values.first()) {
            return first.clone();
        }
        match schema["type"].as_str() {
            Some("object") => {
                let mut object = serde_json::Map::new();
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|names| names.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let empty = serde_json::Map::new();
                for (name, property) in schema["properties"].as_object().unwrap_or(&empty) {
                    let is_required = required.contains(&name.as_str());
                    let nullable = property["nullable"] == Value::Bool(true);
                    let value = match variant {
                        Variant::Minimal if !is_required => continue,
                        Variant::Nulls if nullable => Value::Null,
                        // Deep optional objects stop at null-free minimal shapes.
                        _ if depth > 3 && !is_required => continue,
                        _ => self.example_at(property, variant, depth + 1),
                    };
                    object.insert(name.clone(), value);
                }
                Value::Object(object)
            }
            Some("array") => Value::Array(Vec::new()),
            Some("integer") => {
                let minimum = schema["minimum"].as_f64().unwrap_or(0.0).max(0.0);
                Value::from(minimum as i64)
            }
            Some("number") => Value::from(0.0),
            Some("boolean") => Value::Bool(false),
            Some("string") => match schema["format"].as_str() {
                Some("date-time") => Value::from("2025-05-06T08:49:17.9361143Z"),
                Some("email") => Value::from("someone@example.com"),
                _ => {
                    let length = schema["minLength"].as_u64().unwrap_or(1).max(1);
                    Value::from("x".repeat(usize::try_from(length).unwrap_or(1)))
                }
            },
            _ => Value::Object(serde_json::Map::new()),
        }
    }
}
