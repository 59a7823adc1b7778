//! Example plugin: a JSON-RPC 2.0 server (https://www.jsonrpc.org/specification).
//!
//! Every text (or UTF-8 binary) message is one request, a notification or a
//! batch. Methods:
//!
//! * `add` — params `[1, 2, 3.5]` or `{"a": 1, "b": 2}`: the sum (an
//!   integer when every operand is one).
//! * `echo` — returns its params (or `null`).
//! * `counter.increment` — params none, `[n]` or `{"by": n}`: adds `n`
//!   (default 1) to a counter kept in host state and returns the new value.
//! * `counter.get`, `counter.reset` — read it, set it to 0.
//! * `methods` — the list of method names.
//!
//! Errors follow the spec: -32700 parse error, -32600 invalid request,
//! -32601 method not found, -32602 invalid params, -32603 internal error.
//! Notifications (requests without `id`) get no response.
//!
//! The counter lives in the `state` interface, not in a global: the host may
//! replace the instance at any event boundary, the state survives that.

wit_bindgen::generate!({
    path: "../../wit",
    world: "websocket-plugin",
    // Also the WASI interfaces the world imports (wasi:config).
    generate_all,
});

use exports::wasmsocket::plugin::handler::{CloseFrame, ConnectionId, Guest, Message, OpenResponse, Request};
use serde_json::{Map, Value, json};
use wasmsocket::plugin::log::{Level, log};
use wasmsocket::plugin::{connections, state};

const METHODS: &[&str] = &["add", "echo", "counter.increment", "counter.get", "counter.reset", "methods"];

struct Rpc;

impl Guest for Rpc {
    fn on_open(_id: ConnectionId, request: Request) -> OpenResponse {
        // Offer the conventional subprotocol when the client asks for it.
        let proto = request.subprotocols.into_iter().find(|p| p == "jsonrpc-2.0");
        OpenResponse::Accept(proto)
    }

    fn on_message(id: ConnectionId, message: Message) {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => return reply(&id, &error(Value::Null, -32700, "Parse error", Some("not UTF-8".into()))),
            },
        };
        if let Some(response) = handle_text(&id, &text) {
            reply(&id, &response);
        }
    }

    fn on_close(_id: ConnectionId, _close: Option<CloseFrame>) {}

    fn on_timer(_id: ConnectionId, _name: String) {}

    fn on_room_timer(_room: String, _name: String) {}
}

fn reply(id: &str, value: &Value) {
    let _ = connections::send(id, &Message::Text(value.to_string()));
}

/// The response to one message, or none (notifications only).
fn handle_text(conn: &str, text: &str) -> Option<Value> {
    let parsed: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Some(error(Value::Null, -32700, "Parse error", Some(e.to_string()))),
    };
    match parsed {
        Value::Array(batch) if batch.is_empty() => Some(error(Value::Null, -32600, "Invalid Request", None)),
        Value::Array(batch) => {
            let responses: Vec<Value> = batch.into_iter().filter_map(|call| handle_call(conn, call)).collect();
            (!responses.is_empty()).then_some(Value::Array(responses))
        }
        call => handle_call(conn, call),
    }
}

/// One call of a request or batch.
fn handle_call(conn: &str, call: Value) -> Option<Value> {
    let Value::Object(mut call) = call else {
        return Some(error(Value::Null, -32600, "Invalid Request", Some("a request is a JSON object".into())));
    };
    let notification = !call.contains_key("id");
    let id = call.remove("id").unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
        return Some(error(Value::Null, -32600, "Invalid Request", Some("id must be a string, number or null".into())));
    }
    if call.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(error(id, -32600, "Invalid Request", Some("jsonrpc must be \"2.0\"".into())));
    }
    let Some(Value::String(method)) = call.remove("method") else {
        return Some(error(id, -32600, "Invalid Request", Some("method must be a string".into())));
    };
    let params = call.remove("params");
    if !matches!(params, None | Some(Value::Array(_) | Value::Object(_))) {
        return Some(error(id, -32600, "Invalid Request", Some("params must be an array or an object".into())));
    }
    log(Level::Debug, &format!("rpc call {method}"));
    let outcome = dispatch(conn, &method, params);
    if notification {
        return None;
    }
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "result": result, "id": id }),
        Err((code, message, data)) => error(id, code, message, data),
    })
}

type Failure = (i64, &'static str, Option<String>);

fn invalid_params(why: &str) -> Failure {
    (-32602, "Invalid params", Some(why.to_string()))
}

fn dispatch(conn: &str, method: &str, params: Option<Value>) -> Result<Value, Failure> {
    match method {
        "add" => add(params),
        "echo" => Ok(params.unwrap_or(Value::Null)),
        "counter.increment" => {
            let by = match &params {
                None => 1,
                Some(Value::Array(a)) if a.is_empty() => 1,
                Some(Value::Array(a)) if a.len() == 1 => {
                    a[0].as_i64().ok_or_else(|| invalid_params("n must be an integer"))?
                }
                Some(Value::Object(o)) if o.is_empty() => 1,
                Some(Value::Object(o)) if o.len() == 1 && o.contains_key("by") => {
                    o["by"].as_i64().ok_or_else(|| invalid_params("by must be an integer"))?
                }
                _ => return Err(invalid_params("expected [n] or {\"by\": n}")),
            };
            let n = counter(conn)?.checked_add(by).ok_or_else(|| invalid_params("counter overflow"))?;
            store(conn, n)?;
            Ok(n.into())
        }
        "counter.get" => Ok(counter(conn)?.into()),
        "counter.reset" => {
            store(conn, 0)?;
            Ok(0.into())
        }
        "methods" => Ok(METHODS.iter().map(|m| Value::from(*m)).collect()),
        _ => Err((-32601, "Method not found", Some(method.to_string()))),
    }
}

fn add(params: Option<Value>) -> Result<Value, Failure> {
    let operands: Vec<Value> = match params {
        Some(Value::Array(a)) => a,
        Some(Value::Object(mut o)) => match (o.remove("a"), o.remove("b")) {
            (Some(a), Some(b)) if o.is_empty() => vec![a, b],
            _ => return Err(invalid_params("expected {\"a\": x, \"b\": y}")),
        },
        None => return Err(invalid_params("expected an array of numbers or {\"a\": x, \"b\": y}")),
        Some(_) => unreachable!("checked by handle_call"),
    };
    if operands.iter().any(|v| !v.is_number()) {
        return Err(invalid_params("operands must be numbers"));
    }
    if let Some(ints) = operands.iter().map(Value::as_i64).collect::<Option<Vec<i64>>>()
        && let Some(sum) = ints.iter().try_fold(0i64, |acc, &x| acc.checked_add(x))
    {
        return Ok(sum.into());
    }
    let sum: f64 = operands.iter().filter_map(Value::as_f64).sum();
    Ok(serde_json::Number::from_f64(sum).map(Value::Number).unwrap_or(Value::Null))
}

/// The counter stored for the connection (state holds it as JSON).
fn counter(conn: &str) -> Result<i64, Failure> {
    let saved = state::get(conn).map_err(|e| (-32603, "Internal error", Some(format!("state.get: {e:?}"))))?;
    Ok(saved
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .and_then(|m| m.get("counter").and_then(Value::as_i64))
        .unwrap_or(0))
}

fn store(conn: &str, n: i64) -> Result<(), Failure> {
    let bytes = json!({ "counter": n }).to_string().into_bytes();
    state::set(conn, &bytes).map_err(|e| (-32603, "Internal error", Some(format!("state.set: {e:?}"))))
}

fn error(id: Value, code: i64, message: &str, data: Option<String>) -> Value {
    let mut err = json!({ "code": code, "message": message });
    if let Some(data) = data {
        err["data"] = Value::String(data);
    }
    json!({ "jsonrpc": "2.0", "error": err, "id": id })
}

export!(Rpc);
