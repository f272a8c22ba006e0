//! What the edge answers on every route, written into the OpenAPI document once instead of on
//! each handler: a request whose body is not JSON of the right shape (400, 415, 413), whose path
//! or query parameters do not parse (400), or that lacks a good token (401); every 503 carries
//! `Retry-After`. Path ids are
//! UUIDs, an `Idempotency-Key` is 1 to 255 visible ASCII characters, and image references
//! follow one expression; the document says so, so generated clients and fuzzers send what the
//! node takes.

use serde_json::{Map, Value, json};
use utoipa::openapi::OpenApi;

/// Adds the edge's answers and the id format to every operation of `openapi`.
pub fn complete(openapi: OpenApi) -> OpenApi {
    let Ok(mut document) = serde_json::to_value(&openapi) else {
        return openapi;
    };
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for schema in schemas.values_mut() {
            image_fields(schema);
        }
    }
    if let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                complete_operation(path, operation);
            }
        }
    }
    serde_json::from_value(document).unwrap_or(openapi)
}

fn complete_operation(path: &str, operation: &mut Map<String, Value>) {
    let mut answers: Vec<(&str, &str)> = Vec::new();
    if let Some(body) = operation.get("requestBody") {
        answers.push((
            "400",
            "The body is malformed or breaks a rule of its schema",
        ));
        answers.push(("413", "The body is larger than the node accepts"));
        let json_body = body
            .pointer("/content")
            .and_then(Value::as_object)
            .is_some_and(|content| content.contains_key("application/json"));
        if json_body {
            answers.push(("415", "The body is not `application/json`"));
        } else {
            answers.push(("415", "The body is not of the documented content type"));
        }
    }
    let parameters = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut);
    if let Some(parameters) = parameters {
        let mut any_path_or_query = false;
        for parameter in parameters.iter_mut() {
            let place = parameter
                .get("in")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            if place == "path" || place == "query" {
                any_path_or_query = true;
            }
            if place == "query"
                && parameter.get("name").and_then(Value::as_str) == Some("cursor")
                && let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut)
            {
                schema.insert("pattern".into(), json!(cursor_pattern(path)));
            }
            if place == "header"
                && parameter.get("name").and_then(Value::as_str) == Some("Idempotency-Key")
            {
                parameter["schema"] = json!({
                    "type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[\x21-\x7e]+$"
                });
            }
            if place == "path" && is_id_path(path) {
                let name = parameter.get("name").and_then(Value::as_str).unwrap_or("");
                if (name == "id" || name.ends_with("Id"))
                    && let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut)
                    && schema.get("type") == Some(&json!("string"))
                {
                    schema.entry("format").or_insert(json!("uuid"));
                }
            }
        }
        if any_path_or_query {
            answers.push((
                "400",
                "A path or query parameter is malformed or out of range",
            ));
        }
    }
    let secured = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|security| !security.is_empty());
    if secured {
        answers.push(("401", "Missing, malformed, expired, revoked or stale token"));
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, description) in answers {
        responses.entry(status).or_insert_with(|| {
            json!({
                "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
            })
        });
    }
    // Every 503 says when to try again.
    if let Some(unavailable) = responses.get_mut("503").and_then(Value::as_object_mut) {
        unavailable.insert(
            "headers".into(),
            json!({
                "Retry-After": {
                    "description": "Seconds to wait before trying again",
                    "schema": { "type": "integer", "minimum": 1 }
                }
            }),
        );
    }
}

/// `image` and `picture` fields take what [`super::fields::image`] takes.
fn image_fields(schema: &mut Value) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if (name == "image" || name == "picture")
            && let Some(property) = property.as_object_mut()
        {
            property.insert("pattern".into(), json!(super::fields::IMAGE_PATTERN));
            property.insert("maxLength".into(), json!(2048));
        }
    }
}

/// What the `nextCursor` of a list looks like: an order id for the order lists (keyset), the
/// creation instant (Unix ms), order id and payment of the last refund, an offset for lists
/// ranked in memory; empty is the first page.
fn cursor_pattern(path: &str) -> &'static str {
    match path {
        "/api/order/myorder" | "/api/order/restaurant" => {
            "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$"
        }
        "/api/admin/refunds/pending" => {
            "^([0-9]{1,15}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[A-Za-z0-9_]*)?$"
        }
        _ => "^([0-9]{1,9})?$",
    }
}

/// Paths whose id parameters are UUIDs (a shard's id is a number, an upload's name a file name,
/// a provider's a word).
fn is_id_path(path: &str) -> bool {
    !(path.contains("/shards/") || path.starts_with("/media/") || path.contains("/webhook/"))
}
