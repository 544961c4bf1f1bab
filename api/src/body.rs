//! Reading JSON request bodies strictly: right media type, within the size limit, valid
//! UTF-8 JSON, and no object with the same key twice (which serde_json would otherwise
//! resolve silently by keeping the last one: a classic request-smuggling foothold).

use std::{collections::HashSet, fmt};

use axum::{
    body::Bytes,
    extract::rejection::BytesRejection,
    http::{HeaderMap, StatusCode, header},
};
use fraudsense_actors::transaction::FieldError;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::{MAX_BODY_BYTES, problem::ApiError};

/// Checks the media type and the default limit ([`MAX_BODY_BYTES`]), then parses the body
/// as strict JSON.
pub fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    json_body_within(headers, body, MAX_BODY_BYTES)
}

/// [`json_body`] for a route that raised the body limit to `limit` bytes (with its own
/// `DefaultBodyLimit`), so that a `413` names the limit that applies.
pub fn json_body_within(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit },
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    parse_strict(&body)
}

/// Parses JSON, rejecting duplicate object keys (reported as a field error naming the key).
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // The document already parsed above, so this pass can only find duplicates.
    let _ = KeyCheck { duplicates: &mut duplicates }.deserialize(&mut de);
    if duplicates.is_empty() {
        Ok(value)
    } else {
        Err(ApiError::Validation(
            duplicates
                .into_iter()
                .map(|key| FieldError { field: key, reason: "appears more than once".into() })
                .collect(),
        ))
    }
}

/// Walks a document, recording every key that repeats within one object.
struct KeyCheck<'a> {
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for KeyCheck<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyCheck<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(KeyCheck { duplicates: &mut *self.duplicates })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value_seed(KeyCheck { duplicates: &mut *self.duplicates })?;
            if !seen.insert(key.clone()) && !self.duplicates.contains(&key) {
                self.duplicates.push(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duplicates(json: &str) -> Vec<String> {
        match parse_strict(json.as_bytes()) {
            Err(ApiError::Validation(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => Vec::new(),
        }
    }

    #[test]
    fn finds_duplicate_keys_at_any_depth() {
        assert_eq!(duplicates(r#"{"a": 1, "a": 2}"#), ["a"]);
        assert_eq!(duplicates(r#"{"m": {"x": 1, "x": 1}, "l": [{"y": 1, "y": 2}]}"#), ["x", "y"]);
        assert!(duplicates(r#"{"a": 1.250, "b": {"a": 2}, "c": [1, "a", null, true]}"#).is_empty());
    }

    #[test]
    fn bad_json_and_bad_utf8_are_bad_requests() {
        assert!(matches!(parse_strict(b"{\"a\": "), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse_strict(b"{\"a\": \"\xff\"}"), Err(ApiError::BadRequest(_))));
    }
}
