//! What the Connect translation knows of the contract: the methods a
//! listener serves, and the protobuf JSON mapping of their messages, both
//! read from the compiled descriptor sets (the same bytes server reflection
//! answers with), so no message needs code of its own.
//!
//! JSON goes through `prost-reflect`'s serde support rather than generated
//! serde impls (`pbjson`): the descriptor set is already compiled in for
//! reflection and the crate is already in the build (protox uses it), while
//! `pbjson` would add a code generator and a second set of types beside
//! prost's. Its mapping is the canonical one: lowerCamelCase names (the
//! original names are accepted too), RFC 3339 `Timestamp`s, `FieldMask` as a
//! comma-separated string, 64-bit integers as strings, enums by name, and
//! unknown fields refused, as the mapping asks of a parser by default.

use std::collections::HashMap;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use prost_types::method_options::IdempotencyLevel;

/// One method a listener serves over Connect.
#[derive(Debug, Clone)]
pub(super) struct Method {
    pub(super) input: MessageDescriptor,
    pub(super) output: MessageDescriptor,
    /// Marked `idempotency_level = NO_SIDE_EFFECTS`: may be called with GET.
    pub(super) no_side_effects: bool,
    /// Unary (neither side streams): the only kind Connect's unary
    /// protocol carries.
    pub(super) unary: bool,
}

/// The methods of a listener's services, by gRPC path.
#[derive(Debug)]
pub(super) struct Schema {
    pool: DescriptorPool,
    methods: HashMap<String, Method>,
}

/// Why a request message could not be read as JSON. The description never
/// holds any of the request's text (a wrong value could be a password): only
/// where the problem is and what kind it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JsonRefusal {
    pub(super) description: String,
}

impl Schema {
    /// The methods of `services` (`package.Service`), from the contract's
    /// descriptor set, tonic-health's and tonic-types' (for the error
    /// details' JSON).
    pub(super) fn new(services: &[&str]) -> Result<Self, prost_reflect::DescriptorError> {
        let mut pool = DescriptorPool::new();
        pool.decode_file_descriptor_set(crate::grpc::pb::FILE_DESCRIPTOR_SET)?;
        pool.decode_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)?;
        pool.decode_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)?;
        let mut methods = HashMap::new();
        for service in services
            .iter()
            .filter_map(|name| pool.get_service_by_name(name))
        {
            for method in service.methods() {
                let no_side_effects = method
                    .method_descriptor_proto()
                    .options
                    .as_ref()
                    .is_some_and(|options| {
                        options.idempotency_level() == IdempotencyLevel::NoSideEffects
                    });
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    Method {
                        input: method.input(),
                        output: method.output(),
                        no_side_effects,
                        unary: !method.is_client_streaming() && !method.is_server_streaming(),
                    },
                );
            }
        }
        Ok(Self { pool, methods })
    }

    /// The paths of every method known.
    #[cfg(feature = "fuzzing")]
    pub(super) fn paths(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// The method served at `path` (`/package.Service/Method`).
    pub(super) fn method(&self, path: &str) -> Option<&Method> {
        self.methods.get(path)
    }

    /// `json`, a message of type `descriptor` in the JSON mapping, as
    /// protobuf. An empty body is the empty message.
    pub(super) fn json_to_proto(
        descriptor: &MessageDescriptor,
        json: &[u8],
    ) -> Result<Vec<u8>, JsonRefusal> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let refusal = |error: serde_json::Error| {
            let kind = match error.classify() {
                serde_json::error::Category::Syntax => "is not valid JSON",
                serde_json::error::Category::Eof => "ends before its JSON does",
                serde_json::error::Category::Io => "could not be read",
                serde_json::error::Category::Data => {
                    // serde's messages quote the offending value, so only an
                    // unknown field's name (an identifier, never a value) is
                    // taken from them.
                    let what = match unknown_field_name(&error.to_string()) {
                        Some(field) => format!("has no field `{field}`"),
                        None => "has a value of the wrong type or out of range".to_owned(),
                    };
                    return JsonRefusal {
                        description: format!(
                            "the request body does not fit {}: it {what} (line {}, column {})",
                            descriptor.full_name(),
                            error.line(),
                            error.column()
                        ),
                    };
                }
            };
            JsonRefusal {
                description: format!(
                    "the request body {kind} (line {}, column {})",
                    error.line(),
                    error.column()
                ),
            }
        };
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let message = DynamicMessage::deserialize_with_options(
            descriptor.clone(),
            &mut deserializer,
            &DeserializeOptions::new(),
        )
        .map_err(refusal)?;
        deserializer.end().map_err(refusal)?;
        Ok(message.encode_to_vec())
    }

    /// `proto`, a message of type `descriptor`, in the JSON mapping (fields
    /// with their default value left out, as the mapping does by default).
    pub(super) fn proto_to_json(
        descriptor: &MessageDescriptor,
        proto: &[u8],
    ) -> Result<Vec<u8>, String> {
        let message = DynamicMessage::decode(descriptor.clone(), proto)
            .map_err(|error| format!("{} does not decode: {error}", descriptor.full_name()))?;
        let mut json = Vec::with_capacity(proto.len() * 2 + 2);
        let mut serializer = serde_json::Serializer::new(&mut json);
        message
            .serialize_with_options(&mut serializer, &SerializeOptions::new())
            .map_err(|error| format!("{} does not encode: {error}", descriptor.full_name()))?;
        Ok(json)
    }

    /// An error detail (`type` such as `google.rpc.ErrorInfo`, `value` its
    /// protobuf) in the JSON mapping, for the `debug` field of a Connect
    /// error detail; `None` for a type the pool does not know.
    pub(super) fn detail_json(&self, type_name: &str, value: &[u8]) -> Option<serde_json::Value> {
        let descriptor = self.pool.get_message_by_name(type_name)?;
        let message = DynamicMessage::decode(descriptor, value).ok()?;
        serde_json::to_value(&message).ok()
    }
}

/// The field name in prost-reflect's "unrecognized field name 'name'"
/// message, if it is a plain identifier (anything else could be part of a
/// value).
fn unknown_field_name(message: &str) -> Option<&str> {
    let name = message
        .strip_prefix("unrecognized field name '")?
        .split('\'')
        .next()?;
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    plain.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::pb;

    fn schema() -> Schema {
        Schema::new(&["licensing.v1.UserService", "grpc.health.v1.Health"])
            .expect("the compiled descriptor sets load")
    }

    #[test]
    fn every_user_service_method_is_known_and_the_read_calls_allow_get() {
        let schema = schema();
        let login = schema
            .method("/licensing.v1.UserService/Login")
            .expect("Login");
        assert!(login.unary);
        assert!(!login.no_side_effects);
        for read in [
            "GetProfile",
            "ListMyLicenses",
            "GetLicense",
            "ListActivations",
            "ListReleases",
        ] {
            let method = schema
                .method(&format!("/licensing.v1.UserService/{read}"))
                .unwrap_or_else(|| panic!("{read}"));
            assert!(method.no_side_effects, "{read} allows GET");
        }
        assert!(schema.method("/grpc.health.v1.Health/Check").is_some());
        assert!(
            !schema
                .method("/grpc.health.v1.Health/Watch")
                .expect("Watch")
                .unary
        );
        assert!(
            schema
                .method("/licensing.v1.IssuanceService/IssueLicense")
                .is_none(),
            "the public listener knows nothing of the internal services"
        );
    }

    #[test]
    fn json_follows_the_mapping_both_ways() {
        let schema = schema();
        let login = schema.method("/licensing.v1.UserService/Login").unwrap();
        let proto = Schema::json_to_proto(
            &login.input,
            br#"{"email":"a@example.com","password":"pw","twoFactorCode":"123456"}"#,
        )
        .unwrap();
        let request = pb::LoginRequest::decode(proto.as_slice()).unwrap();
        assert_eq!(request.email, "a@example.com");
        assert_eq!(request.two_factor_code, "123456");
        // The original field names are accepted too.
        let proto =
            Schema::json_to_proto(&login.input, br#"{"two_factor_code":"654321"}"#).unwrap();
        assert_eq!(
            pb::LoginRequest::decode(proto.as_slice())
                .unwrap()
                .two_factor_code,
            "654321"
        );

        let profile = pb::Profile {
            id: "u1".into(),
            email: "a@example.com".into(),
            first_name: "Ada".into(),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let get = schema
            .method("/licensing.v1.UserService/GetProfile")
            .unwrap();
        let answer = pb::GetProfileResponse {
            profile: Some(profile),
        };
        let json = Schema::proto_to_json(&get.output, &answer.encode_to_vec()).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["profile"]["firstName"], "Ada");
        assert_eq!(json["profile"]["createdAt"], "2023-11-14T22:13:20Z");
        assert!(
            json["profile"].get("lastName").is_none(),
            "defaults left out"
        );
    }

    #[test]
    fn refusals_say_where_but_never_quote_the_request() {
        let schema = schema();
        let login = schema.method("/licensing.v1.UserService/Login").unwrap();
        for body in [
            &br#"{"email":"a@example.com","password":12345678}"#[..],
            br#"{"password":"hunter2-secret","unknownField":1}"#,
            br#"{"password":"hunter2-secret""#,
            br#"not json hunter2-secret"#,
            br#"{"password":"hunter2-secret"} trailing"#,
        ] {
            let refusal = Schema::json_to_proto(&login.input, body).expect_err("refused");
            assert!(
                !refusal.description.contains("hunter2") && !refusal.description.contains("1234"),
                "{}",
                refusal.description
            );
            assert!(
                refusal.description.contains("line 1"),
                "{}",
                refusal.description
            );
        }
        let unknown = Schema::json_to_proto(&login.input, br#"{"emial":"a@example.com"}"#)
            .expect_err("refused");
        assert!(
            unknown.description.contains("has no field `emial`"),
            "{}",
            unknown.description
        );
        assert_eq!(
            Schema::json_to_proto(&login.input, b"  \n").unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn error_details_have_a_readable_json_form() {
        let schema = schema();
        let info = tonic_types::pb::ErrorInfo {
            reason: "INVALID_CREDENTIALS".into(),
            domain: "licensing-gateway".into(),
            metadata: Default::default(),
        };
        let json = schema
            .detail_json("google.rpc.ErrorInfo", &info.encode_to_vec())
            .unwrap();
        assert_eq!(json["reason"], "INVALID_CREDENTIALS");
        assert!(schema.detail_json("no.such.Type", &[]).is_none());
    }
}
