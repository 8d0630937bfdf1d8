//! Checking one JSON object of a definition field by field: every problem
//! is recorded with its path (JSON pointer, e.g. `/healthChecks/0/intervalSeconds`)
//! and checking goes on, so a 422 lists them all.

use super::FieldError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Every problem found so far.
#[derive(Default)]
pub(super) struct Errors(pub(super) Vec<FieldError>);

impl Errors {
    pub(super) fn push(&mut self, path: &str, msg: impl Into<String>) {
        let path = if path.is_empty() { "/" } else { path };
        match self.0.iter_mut().find(|e| e.path == path) {
            Some(e) => e.errors.push(msg.into()),
            None => self.0.push(FieldError {
                path: path.into(),
                errors: vec![msg.into()],
            }),
        }
    }
}

/// One object of the definition and where it sits.
pub(super) struct Obj<'a> {
    pub(super) path: String,
    pub(super) map: &'a Map<String, Value>,
}

/// Shows a number as given (whole numbers without a fraction).
fn show(x: f64) -> String {
    if x.abs() >= 1e15 {
        format!("{x:e}")
    } else if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

impl<'a> Obj<'a> {
    /// `v` as an object at `path`, or an error there.
    pub(super) fn of(v: &'a Value, path: String, e: &mut Errors) -> Option<Obj<'a>> {
        match v.as_object() {
            Some(map) => Some(Obj { path, map }),
            None => {
                e.push(&path, "must be an object");
                None
            }
        }
    }

    pub(super) fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.path)
    }

    /// The value of `key`; `null` counts as absent.
    pub(super) fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A finite number in `[min, max]`; `default` when absent.
    pub(super) fn num(&self, e: &mut Errors, key: &str, default: f64, min: f64, max: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) => match n.as_f64().filter(|x| x.is_finite()) {
                Some(x) if (min..=max).contains(&x) => x,
                Some(x) => {
                    e.push(
                        &self.at(key),
                        format!(
                            "must be between {} and {}, got {}",
                            show(min),
                            show(max),
                            show(x)
                        ),
                    );
                    default
                }
                None => {
                    e.push(&self.at(key), "must be a finite number");
                    default
                }
            },
            Some(_) => {
                e.push(&self.at(key), "must be a number");
                default
            }
        }
    }

    /// A finite number in `(0, max]`; `default` when absent.
    pub(super) fn positive(&self, e: &mut Errors, key: &str, default: f64, max: f64) -> f64 {
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) => match n.as_f64() {
                Some(x) if x > 0.0 && x <= max => x,
                x => {
                    e.push(
                        &self.at(key),
                        format!(
                            "must be greater than 0 and at most {}, got {}",
                            show(max),
                            show(x.unwrap_or(f64::NAN))
                        ),
                    );
                    default
                }
            },
            Some(_) => {
                e.push(&self.at(key), "must be a number");
                default
            }
        }
    }

    /// A whole number in `[min, max]`; `default` when absent.
    pub(super) fn whole(&self, e: &mut Errors, key: &str, default: u64, min: u64, max: u64) -> u64 {
        match self.get(key) {
            None => default,
            Some(Value::Number(n)) => {
                if let Some(x) = n.as_u64().filter(|x| (min..=max).contains(x)) {
                    return x;
                }
                let x = n.as_f64().unwrap_or(f64::NAN);
                e.push(
                    &self.at(key),
                    format!(
                        "must be a whole number between {min} and {max}, got {}",
                        show(x)
                    ),
                );
                default
            }
            Some(_) => {
                e.push(&self.at(key), "must be a whole number");
                default
            }
        }
    }

    pub(super) fn string(&self, e: &mut Errors, key: &str) -> Option<String> {
        match self.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                e.push(&self.at(key), "must be a string");
                None
            }
        }
    }

    /// The items of an array field (absent: none), each with its path.
    pub(super) fn array(&self, e: &mut Errors, key: &str) -> Vec<(String, &'a Value)> {
        match self.get(key) {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{}/{i}", self.at(key)), v))
                .collect(),
            Some(_) => {
                e.push(&self.at(key), "must be an array");
                Vec::new()
            }
        }
    }

    /// An object of string values.
    pub(super) fn string_map(&self, e: &mut Errors, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match self.get(key) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        Value::Object(o) if key == "env" && o.contains_key("secret") => e.push(
                            &format!("{}/{k}", self.at(key)),
                            "secret references are not supported yet; use a plain value",
                        ),
                        _ => e.push(&format!("{}/{k}", self.at(key)), "must be a string"),
                    }
                }
            }
            Some(_) => e.push(&self.at(key), "must be an object of strings"),
        }
        out
    }

    /// A field Agora does not implement: accepted only absent, `null` or
    /// with a value that changes nothing (`inert`), refused otherwise
    /// saying `why`.
    pub(super) fn unsupported(
        &self,
        e: &mut Errors,
        key: &str,
        inert: impl Fn(&Value) -> bool,
        why: &str,
    ) {
        if let Some(v) = self.get(key)
            && !inert(v)
        {
            e.push(&self.at(key), format!("not supported: {why}"));
        }
    }

    /// Refuses every key not in `known` (nothing is silently ignored).
    pub(super) fn only(&self, e: &mut Errors, known: &[&str]) {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                e.push(&self.at(k), "unknown field");
            }
        }
    }
}

/// An empty array or object: a value that asks for nothing.
pub(super) fn empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}
